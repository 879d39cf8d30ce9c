"""Data: Python sources → NL/code pairs → encoded instances → packed rows."""

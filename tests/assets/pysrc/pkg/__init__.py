"""A fixture package for mmpt's extraction tests."""

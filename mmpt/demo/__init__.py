"""The demo, a tool built on the library: its stages (`mmpt demo`), its report (`mmpt report`) and plots."""

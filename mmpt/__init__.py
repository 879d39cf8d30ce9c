"""mmpt: modality-relative further pre-training of code language models."""

__version__ = "0.1.0"

"""The model side: packed-row attention masks, split (modality-relative) embeddings, PanGu-α.

Importing it registers our PanGu-α model type (`mmpt_pangu`) with transformers' Auto classes, so
every command that loads a checkpoint through `mmpt.model` can load one.
"""

from mmpt.model.pangu import register as _register_pangu

_register_pangu()

"""The model side: packed-row attention masks and split (modality-relative) embeddings."""

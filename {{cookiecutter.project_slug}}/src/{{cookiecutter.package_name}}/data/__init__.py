"""Datasets per modality, the toy data writer and the DataModule."""

"""Encoders per modality, heads per task, and the network that joins them."""

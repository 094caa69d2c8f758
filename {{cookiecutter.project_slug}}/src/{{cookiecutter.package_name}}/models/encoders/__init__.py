"""One encoder per modality; each maps its batch entry to [B, D] features."""

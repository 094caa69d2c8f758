"""One encoder per input modality, each mapping its batch entry to [B, out_features] features.

Each file registers its encoder (`@register("encoder", name)`, models/registry.py): `timm` (image.py),
`tabular` (tabular.py), `sequence` (sequence.py). A project keeps only the files of its own inputs; a new
encoder is one new file here plus `model.network.init_args.encoders.<input>: {name: <name>, ...}` in the config.
"""

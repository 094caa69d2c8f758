"""Sequence encoder: token ids or a numeric series with a padding mask -> one feature vector per sample.

Both variants honour the mask, so how far a sample was padded never changes its features: the GRU runs on a
packed sequence (it stops at each sample's last real step), the Transformer masks padded keys and averages only
real steps. Without that, a batch's longest sample would silently change every other sample's prediction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..registry import register

KINDS = ("gru", "transformer")


@register("encoder", "sequence")
class SequenceEncoder(nn.Module):
    """{"values": int64 [B, T] or float32 [B, T, C], "mask": bool [B, T]} -> [B, out_features].

    Give `vocab_size` for token ids (0 = padding) or `channels` for numeric series. kind "gru": bidirectional
    GRU, features = last forward and backward hidden states (out_features = 2 * hidden_dim). kind "transformer":
    pre-norm Transformer encoder, 4 heads, masked mean pooling (out_features = hidden_dim). `num_layers`
    defaults to 1 for the GRU and 2 for the Transformer; `max_length` bounds the learned positions.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        channels: int | None = None,
        kind: str = "gru",
        hidden_dim: int = 128,
        num_layers: int | None = None,
        dropout: float = 0.0,
        max_length: int = 512,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"sequence encoder kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
        if (vocab_size is None) == (channels is None):
            raise ValueError("give exactly one of vocab_size (token ids) or channels (numeric series)")
        self.kind = kind
        self.max_length = max_length
        if vocab_size is not None:
            self.embed: nn.Module = nn.Embedding(vocab_size, hidden_dim, padding_idx=0)
        else:
            self.embed = nn.Linear(channels, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        if kind == "gru":
            layers = num_layers or 1
            self.rnn = nn.GRU(
                hidden_dim,
                hidden_dim,
                num_layers=layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if layers > 1 else 0.0,  # GRU dropout acts between layers only
            )
            self.out_features: int = 2 * hidden_dim
        else:
            if hidden_dim % 4:
                raise ValueError(f"the transformer uses 4 heads: hidden_dim must be divisible by 4, got {hidden_dim}")
            self.position = nn.Embedding(max_length, hidden_dim)
            layer = nn.TransformerEncoderLayer(
                hidden_dim, nhead=4, dim_feedforward=2 * hidden_dim, dropout=dropout, batch_first=True, norm_first=True
            )
            # Pre-norm layers leave the residual stream unnormalized: a final LayerNorm closes it.
            # Nested tensors are unsupported with norm_first (and would only warn), so keep them off.
            self.transformer = nn.TransformerEncoder(
                layer, num_layers=num_layers or 2, norm=nn.LayerNorm(hidden_dim), enable_nested_tensor=False
            )
            self.out_features = hidden_dim

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], kind: str = "gru", hidden_dim: int = 128, dropout: float = 0.0, **options: Any
    ) -> SequenceEncoder:
        """Build from the reader's spec: {"kind": "tokens", "vocab_size": V} or {"kind": "numeric", "channels": C},
        with an optional "max_length" (the longest input the positional table must cover)."""
        if "max_length" in spec:
            options.setdefault("max_length", spec["max_length"])
        if spec.get("kind") == "tokens":
            return cls(vocab_size=spec["vocab_size"], kind=kind, hidden_dim=hidden_dim, dropout=dropout, **options)
        if spec.get("kind") == "numeric":
            return cls(channels=spec["channels"], kind=kind, hidden_dim=hidden_dim, dropout=dropout, **options)
        raise ValueError(f"sequence spec kind must be 'tokens' or 'numeric', got {spec.get('kind')!r}")

    def forward(self, sequence: dict[str, torch.Tensor]) -> torch.Tensor:
        values, mask = sequence["values"], sequence["mask"].bool()
        x = self.dropout(self.embed(values))  # [B, T, H]
        if self.kind == "gru":
            # pack_padded_sequence wants lengths on the CPU; clamp guards against an all-padding row.
            lengths = mask.sum(1).clamp(min=1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            # The last layer's final states, read from its padded outputs: the forward direction's at each
            # sample's last real step, the backward direction's at step 0 (the same values as the returned hidden
            # state, but unpacking is what lets the ONNX exporter turn packing into a GRU with sequence lengths).
            output, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
            size = self.rnn.hidden_size
            last_step = (lengths - 1).to(x.device).view(-1, 1, 1).expand(-1, 1, size)
            forward = output[:, :, :size].gather(1, last_step).squeeze(1)
            return torch.cat([forward, output[:, 0, size:]], dim=1)
        steps = x.shape[1]
        if not torch.jit.is_tracing() and steps > self.max_length:  # export traces one length: no need to check it
            raise ValueError(
                f"sequence length {steps} exceeds the encoder's max_length {self.max_length}; "
                "build the encoder with a larger max_length"
            )
        x = x + self.position(torch.arange(steps, device=x.device))
        x = self.transformer(x, src_key_padding_mask=~mask)
        # masked_fill, not multiply: the fast path may leave NaN at padded steps, and NaN * 0 is still NaN.
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        return x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(x.dtype)

"""CARZero's Similarity Representation: a cross-attention-only decoder scoring (memory, query) pairs."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class CrossAttentionLayer(nn.Module):
    """One pre-norm decoder layer WITHOUT self-attention.

    t <- t + Dropout(CrossAttention(LN_a(t), memory)); t <- t + Dropout(FFN(LN_f(t))),
    FFN = Linear-ReLU-Linear.
    Queries never attend to each other, so every query is scored independently of the others.

    Input: queries (B, Q, D), memory (B, M, D) (already normalised by the shared LayerNorm),
    optional memory_padding_mask (B, M) bool, True = ignore.
    Output: (B, Q, D).
    """

    def __init__(self, dim: int, num_heads: int = 4, ffn_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout_attention = nn.Dropout(dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.dropout_ffn = nn.Dropout(dropout)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        attended, _ = self.cross_attention(
            self.norm_attention(queries),
            memory,
            memory,
            key_padding_mask=memory_padding_mask,
            need_weights=False,
        )
        queries = queries + self.dropout_attention(attended)
        return queries + self.dropout_ffn(self.ffn(self.norm_ffn(queries)))


def similarity_head(kind: str, dim: int, dropout: float = 0.1) -> nn.Module:
    """Score head: "linear" = Linear(D, 1) (paper); "mlp" = D-1024-512-256-1 with ReLU (released model)."""
    if kind == "linear":
        return nn.Linear(dim, 1)
    if kind == "mlp":
        widths = [dim, 1024, 512, 256]
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(widths[-1], 1))
        return nn.Sequential(*layers)
    raise ValueError(f"unknown similarity head {kind!r}; expected 'linear' or 'mlp'")


class SimilarityRepresentation(nn.Module):
    """Cross-attention decoder that turns (memory, query) pairs into raw similarity logits.

    One module serves both directions: image-to-text (memory = an image's [CLS; patches], queries = sentence
    embeddings) and text-to-image (memory = a text's [sentence; words], queries = image CLS tokens).
    One shared LayerNorm normalises the queries, the memory and the decoder output. No temperature.

    Args:
        dim: token width D (768 in the paper).
        depth: number of cross-attention layers (4).
        num_heads: attention heads (4).
        ffn_dim: FFN hidden width (1024).
        dropout: dropout in the layers and before the head (0.1).
        head: "linear" (paper) or "mlp" (released checkpoint).

    Input: memory (B, M, D); queries (Q, D), every query is scored against every memory;
    optional memory_padding_mask (B, M) bool (True = ignore).
    Output: (B, Q) raw logits, unbounded.
    """

    def __init__(
        self,
        dim: int = 768,
        depth: int = 4,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        head: str = "linear",
    ) -> None:
        super().__init__()
        self.shared_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            CrossAttentionLayer(dim, num_heads, ffn_dim, dropout) for _ in range(depth)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = similarity_head(head, dim, dropout)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # normal(0, 0.02) as in the reference; biases start at zero.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, std=0.02)
            nn.init.zeros_(module.in_proj_bias)

    def forward_features(
        self, memory: torch.Tensor, queries: torch.Tensor, memory_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, M, D) memory, (Q, D) queries -> (B, Q, D) decoded queries after the shared norm."""
        memory = self.shared_norm(memory)
        tokens = self.shared_norm(queries).unsqueeze(0).expand(memory.shape[0], -1, -1)  # (B, Q, D)
        for layer in self.layers:
            tokens = layer(tokens, memory, memory_padding_mask)
        return self.shared_norm(tokens)

    def forward(
        self, memory: torch.Tensor, queries: torch.Tensor, memory_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        decoded = self.forward_features(memory, queries, memory_padding_mask)
        return self.head(self.dropout(decoded)).squeeze(-1)

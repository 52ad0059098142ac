"""CARZero's Similarity Representation: a cross-attention-only decoder scoring (memory, query) pairs."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttentionLayer(nn.Module):
    """One pre-norm decoder layer WITHOUT self-attention.

    t <- t + Dropout(CrossAttention(LN_a(t), memory)); t <- t + Dropout(FFN(LN_f(t))),
    FFN = Linear-ReLU-Linear.
    Queries never attend to each other, so every query is scored independently of the others.

    The attention keeps one (B, Q, D) layout throughout and runs `scaled_dot_product_attention` on head views;
    its parameters are those of an `nn.MultiheadAttention` (`cross_attention.in_proj_*`, `out_proj`), so
    checkpoints of earlier versions load unchanged.

    Input: queries (B, Q, D), memory (B, M, D) (already normalised by the shared LayerNorm),
    optional memory_padding_mask (B, M) bool, True = ignore.
    Output: (B, Q, D); with ``return_attention`` also the attention weights (B, heads, Q, M).
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
        self.num_heads = num_heads

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, D) memory -> keys and values as (B, heads, M, D/heads) views of one projection."""
        batch, length, dim = memory.shape
        weight, bias = self.cross_attention.in_proj_weight, self.cross_attention.in_proj_bias
        kv = F.linear(memory, weight[dim:], bias[dim:])  # (B, M, 2D): keys and values in one matmul
        kv = kv.view(batch, length, 2, self.num_heads, dim // self.num_heads)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multi-head attention of (B, Q, D) queries over (B, heads, M, dh) keys/values -> (B, Q, D)."""
        batch, length, dim = queries.shape
        attention = self.cross_attention
        q = F.linear(queries, attention.in_proj_weight[:dim], attention.in_proj_bias[:dim])
        q = q.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)  # (B, h, Q, dh)
        dropout = attention.dropout if self.training else 0.0
        weights = None
        if return_attention:  # explicit softmax: the weights are needed for the maps
            logits = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            weights = logits.softmax(dim=-1)  # (B, h, Q, M)
            out = F.dropout(weights, dropout, self.training) @ values
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, length, dim)
        return attention.out_proj(out), weights

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys_values(memory) if keys_values is None else keys_values
        mask = None if memory_padding_mask is None else ~memory_padding_mask[:, None, None, :]
        attended, weights = self.attend(self.norm_attention(queries), keys, values, mask, return_attention)
        queries = queries + self.dropout_attention(attended)
        queries = queries + self.dropout_ffn(self.ffn(self.norm_ffn(queries)))
        return (queries, weights) if return_attention else queries


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

    def memory_keys_values(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's keys and values of (B, M, D) memory: compute once for memory that is scored many
        times (the class prompts of zero-shot scoring) and pass as ``keys_values`` to `forward`."""
        memory = self.shared_norm(memory)
        return [layer.keys_values(memory) for layer in self.layers]

    def forward_features(
        self,
        memory: torch.Tensor,
        queries: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        keys_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, M, D) memory, (Q, D) queries -> (B, Q, D) decoded queries after the shared norm.

        With ``return_attention`` also the attention weights of every layer, each (B, heads, Q, M).
        ``keys_values`` (from `memory_keys_values(memory)`) skips recomputing the memory's projections.
        """
        if keys_values is None:
            memory = self.shared_norm(memory)
        tokens = self.shared_norm(queries).unsqueeze(0).expand(memory.shape[0], -1, -1)  # (B, Q, D)
        maps = []
        for index, layer in enumerate(self.layers):
            cached = None if keys_values is None else keys_values[index]
            if return_attention:
                tokens, weights = layer(tokens, memory, memory_padding_mask, True, cached)
                maps.append(weights)
            else:
                tokens = layer(tokens, memory, memory_padding_mask, keys_values=cached)
        decoded = self.shared_norm(tokens)
        return (decoded, maps) if return_attention else decoded

    def forward(
        self,
        memory: torch.Tensor,
        queries: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        keys_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, Q) raw logits; with ``return_attention`` also the per-layer (B, heads, Q, M) weights."""
        if return_attention:
            decoded, maps = self.forward_features(memory, queries, memory_padding_mask, True, keys_values)
            return self.head(self.dropout(decoded)).squeeze(-1), maps
        decoded = self.forward_features(memory, queries, memory_padding_mask, keys_values=keys_values)
        return self.head(self.dropout(decoded)).squeeze(-1)

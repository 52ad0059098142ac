"""CARZero's Similarity Representation: a cross-attention-only decoder scoring (memory, query) pairs."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

# Keys/values projected from the memory cost 4 M D^2 per memory and layer; folding W_k into the queries and
# W_v after the attention-weighted sum costs 4 Q D^2 plus attention at the full width instead (see
# `CrossAttentionLayer.attend`). The query side is used when its FLOP count is this many times smaller: a
# margin measured on one CPU (benchmarks/carzero.py); at equal FLOPs the one big projection is faster.
QUERY_SIDE_MARGIN = 1.25


class CrossAttentionLayer(nn.Module):
    """One pre-norm decoder layer WITHOUT self-attention.

    t <- t + Dropout(CrossAttention(LN_a(t), memory)); t <- t + Dropout(FFN(LN_f(t))),
    FFN = Linear-ReLU-Linear.
    Queries never attend to each other, so every query is scored independently of the others.

    The attention keeps one (B, Q, D) layout throughout; its parameters are those of an
    `nn.MultiheadAttention` (`cross_attention.in_proj_*`, `out_proj`), so checkpoints of earlier versions load
    unchanged. It is computed in one of two algebraically equal ways, whichever needs fewer operations
    (`attend`): keys and values projected from the memory (`scaled_dot_product_attention` on head views), or
    the key and value projections moved onto the queries' side.

    Input: queries (Bq, Q, D) with Bq = B, or Bq = 1 for queries shared by every memory (the first layer);
    memory (B, M, D) (already normalised by the shared LayerNorm); optional memory_padding_mask (B, M) bool,
    True = ignore.
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
        self.attention_side = "auto"  # see `attend`

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, D) memory -> keys and values as (B, heads, M, D/heads) views of one projection."""
        batch, length, dim = memory.shape
        weight, bias = self.cross_attention.in_proj_weight, self.cross_attention.in_proj_bias
        kv = F.linear(memory, weight[dim:], bias[dim:])  # (B, M, 2D): keys and values in one matmul
        kv = kv.view(batch, length, 2, self.num_heads, dim // self.num_heads)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    def query_side_is_cheaper(self, shared_queries: bool, num_queries: int, memory_length: int) -> bool:
        """Whether `attend_query_side` needs fewer FLOPs per memory than projecting the memory's keys/values.

        Memory side: K/V projection 4 M D^2 + attention 4 Q M D. Query side: W_k on the queries 2 Q D^2 (once
        for all memories when they share the queries), W_v after the weighted sum 2 Q D^2, attention at the
        full width 4 heads Q M D.
        """
        dim, queries, length = self.cross_attention.embed_dim, num_queries, memory_length
        memory_side = 4 * length * dim * dim + 4 * queries * length * dim
        query_side = 2 * queries * dim * dim * (0 if shared_queries else 1) + 2 * queries * dim * dim
        query_side += 4 * self.num_heads * queries * length * dim
        return QUERY_SIDE_MARGIN * query_side < memory_side

    def attend(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor | None = None,
        return_attention: bool = False,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multi-head attention of (Bq, Q, D) queries over (B, M, D) memory -> (B, Q, D), weights or None.

        ``mask`` (B, M) bool, True = ignore. With ``keys_values`` (from `keys_values(memory)`) the memory side
        is used; otherwise ``self.attention_side``: "auto" (default) takes the side with fewer FLOPs
        (`query_side_is_cheaper`), "memory" or "query" force one (the two are equal up to rounding).
        """
        side = self.attention_side
        if side == "auto" and keys_values is None:
            cheaper = self.query_side_is_cheaper(queries.shape[0] == 1, queries.shape[1], memory.shape[1])
            side = "query" if cheaper else "memory"
        if side == "query" and keys_values is None:
            return self.attend_query_side(queries, memory, mask, return_attention)
        keys, values = self.keys_values(memory) if keys_values is None else keys_values
        return self.attend_memory_side(queries, keys, values, mask, return_attention)

    def attend_memory_side(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(q k^T / sqrt(dh)) v on (B, heads, M, dh) keys/values projected from the memory."""
        attention = self.cross_attention
        batch, _, _, head_dim = keys.shape
        dim = queries.shape[-1]
        q = F.linear(queries, attention.in_proj_weight[:dim], attention.in_proj_bias[:dim])
        q = q.view(queries.shape[0], -1, self.num_heads, head_dim).transpose(1, 2)  # (Bq, h, Q, dh)
        q = q.expand(batch, -1, -1, -1)  # shared queries: a view, not a copy
        keep = None if mask is None else ~mask[:, None, None, :]
        dropout = attention.dropout if self.training else 0.0
        weights = None
        if return_attention:  # explicit softmax: the weights are needed for the maps
            logits = q @ keys.transpose(-2, -1) / math.sqrt(head_dim)
            if keep is not None:
                logits = logits.masked_fill(~keep, float("-inf"))
            weights = logits.softmax(dim=-1)  # (B, h, Q, M)
            out = F.dropout(weights, dropout, self.training) @ values
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=keep, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, -1, dim)
        return attention.out_proj(out), weights

    def attend_query_side(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The same attention with the key and value projections moved onto the queries' side, per head h:

        q_h k_h^T = (q_h W_k,h) m^T + q_h b_k,h, and the last term is the same for every key of a query, so
        softmax drops it; P_h v_h = (P_h m) W_v,h^T + rowsum(P_h) b_v,h. No (B, M, D) projection is made,
        which pays when there are fewer queries per memory than memory tokens (B x B training pairs).
        """
        attention = self.cross_attention
        batch, length, dim = memory.shape
        head_dim = dim // self.num_heads
        weight, bias = attention.in_proj_weight, attention.in_proj_bias
        key_weight = weight[dim : 2 * dim] / math.sqrt(head_dim)  # the 1/sqrt(dh) scale, on D x D numbers
        value_weight, value_bias = weight[2 * dim :], bias[2 * dim :]
        q = F.linear(queries, weight[:dim], bias[:dim])  # (Bq, Q, D)
        dropout = attention.dropout if self.training else 0.0
        outputs, maps = [], []
        for head in range(self.num_heads):
            part = slice(head * head_dim, (head + 1) * head_dim)
            q_memory = q[..., part] @ key_weight[part]  # (Bq, Q, D): the query in memory space
            if queries.shape[0] == 1:  # shared queries: one (B M, D) x (D, Q) product
                logits = (memory.reshape(-1, dim) @ q_memory[0].t()).view(batch, length, -1).transpose(1, 2)
            else:
                logits = q_memory @ memory.transpose(1, 2)  # (B, Q, M)
            if mask is not None:
                logits = logits.masked_fill(mask[:, None, :], float("-inf"))
            weights = logits.softmax(dim=-1)
            if return_attention:
                maps.append(weights)
            weights = F.dropout(weights, dropout, self.training)
            out = (weights @ memory) @ value_weight[part].t()  # (B, Q, dh)
            if dropout:  # dropped weights no longer sum to 1
                out = out + weights.sum(-1, keepdim=True) * value_bias[part]
            outputs.append(out)
        out_weight, out_bias = attention.out_proj.weight, attention.out_proj.bias
        if not dropout:  # rows of weights sum to 1: the values' bias passes through out_proj as one vector
            out_bias = out_bias + out_weight @ value_bias
        attended = F.linear(torch.cat(outputs, dim=-1), out_weight, out_bias)
        return attended, torch.stack(maps, dim=1) if return_attention else None

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        normed = self.norm_attention(queries)
        attended, weights = self.attend(normed, memory, memory_padding_mask, return_attention, keys_values)
        autocast = torch.is_autocast_enabled(memory.device.type)
        if torch.is_grad_enabled() or self.training or autocast:  # (B, Q, D), also from (1, Q, D) queries
            queries = queries + self.dropout_attention(attended)
            queries = queries + self.dropout_ffn(self.ffn(self.norm_ffn(queries)))
        else:  # scoring: the same sums written into `attended` (autocast would mix dtypes in place)
            queries = self.add_ffn_(attended.add_(queries))
        return (queries, weights) if return_attention else queries

    def add_ffn_(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens + FFN(LN_f(tokens)) in place, the second linear layer's product accumulated into the tokens
        (one matrix product, no new (B, Q, D) tensor). Inference only: eval mode, no autograd, no autocast."""
        first, second = self.ffn[0], self.ffn[-1]
        hidden = F.linear(self.norm_ffn(tokens), first.weight, first.bias).relu_()
        flat = tokens.view(-1, tokens.shape[-1]).add_(second.bias)
        flat.addmm_(hidden.view(-1, hidden.shape[-1]), second.weight.t())
        return tokens


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
        # (1, Q, D): the first layer computes what depends on the queries alone once for all B memories
        tokens = self.shared_norm(queries).unsqueeze(0)
        maps = []
        for index, layer in enumerate(self.layers):
            cached = None if keys_values is None else keys_values[index]
            if return_attention:
                tokens, weights = layer(tokens, memory, memory_padding_mask, True, cached)
                maps.append(weights)
            else:
                tokens = layer(tokens, memory, memory_padding_mask, keys_values=cached)
        decoded = self.shared_norm(tokens).expand(memory.shape[0], -1, -1)  # (B, Q, D)
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

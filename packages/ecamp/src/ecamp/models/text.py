"""The text side of ECAMP: a BERT (built from a config, trained from scratch) with the multi-scale context
fusion layer before its encoder, and an (untied) masked-language-model head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

__all__ = ["ContextFusionLayer", "ReportMLM", "additive_attention_mask"]


def additive_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 1 = attend / 0 = ignore -> (B, 1, 1, T) additive mask: 0 or the dtype's most negative value."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class _Attention(nn.Module):
    """Multi-head scaled dot-product attention (BERT's projections) that also returns its weights."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of the {heads} heads")
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, queries: torch.Tensor, context: torch.Tensor, additive_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, hidden = queries.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, N, H) -> (B, heads, N, H / heads)
            return x.reshape(b, x.shape[1], self.heads, hidden // self.heads).transpose(1, 2)

        q, k, v = split(self.query(queries)), split(self.key(context)), split(self.value(context))
        scores = q @ k.transpose(-1, -2) / (hidden // self.heads) ** 0.5  # (B, heads, T, N)
        if additive_mask is not None:
            scores = scores + additive_mask
        weights = scores.softmax(dim=-1)
        out = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, t, hidden)
        return out, weights


class ContextFusionLayer(nn.Module):
    """Multi-scale context fusion (ECAMP): text self-attention, cross-attention to the visible patches, plus
    the projected global visual token, then a residual + LayerNorm and BERT's feed-forward block.

    Shapes: text (B, T, H), text_mask (B, T) 1 = token, visual (B, V, H) visible patch latents (already
    projected to H), global_token (B, 1, H). Returns (B, T, H) and the cross-attention weights
    (B, heads, T, V).

    Args:
        hidden: BERT hidden size.
        heads: attention heads.
        ffn_dim: feed-forward inner size.
        dropout: dropout of attention weights and outputs (BERT: 0.1).
        norm_eps: LayerNorm epsilon (BERT: 1e-12).
    """

    def __init__(self, hidden: int, heads: int, ffn_dim: int, dropout: float = 0.1, norm_eps: float = 1e-12):
        super().__init__()
        self.self_attention = _Attention(hidden, heads, dropout)
        self.self_output = nn.Linear(hidden, hidden)
        self.self_norm = nn.LayerNorm(hidden, eps=norm_eps)
        self.cross_attention = _Attention(hidden, heads, dropout)
        self.global_proj = nn.Linear(hidden, hidden)
        self.cross_output = nn.Linear(hidden, hidden)
        self.cross_norm = nn.LayerNorm(hidden, eps=norm_eps)
        self.ffn_in = nn.Linear(hidden, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, text: torch.Tensor, text_mask: torch.Tensor, visual: torch.Tensor, global_token: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, _ = self.self_attention(text, text, additive_attention_mask(text_mask, text.dtype))
        x = self.self_norm(text + self.dropout(self.self_output(attended)))
        # Every visible patch is a key (the masked ones are not in `visual` at all).
        context, cross_weights = self.cross_attention(x, visual)
        # The reference adds the global token to the cross-attention context before its output projection.
        context = context + self.global_proj(global_token)
        x = self.cross_norm(x + self.dropout(self.cross_output(context)))
        ffn = self.ffn_out(F.gelu(self.ffn_in(x)))
        return self.ffn_norm(x + self.dropout(ffn)), cross_weights


class ReportMLM(nn.Module):
    """BERT embeddings -> context fusion with the image -> BERT encoder -> MLM head (not tied to embeddings).

    Input: input_ids (B, T) (with [MASK] tokens), attention_mask (B, T) 1 = token, visual (B, V, D_img)
    visible patch latents (no class token). Output: logits (B, T, vocab_size) and the fusion layer's
    cross-attention weights (B, heads, T, V).

    Args:
        vocab_size, hidden, layers, heads, ffn_dim, max_length: the BERT configuration (ECAMP: 30000,
            768, 6, 6, 1536, 256).
        visual_dim: width of the image latents, projected to ``hidden`` by a Linear.
        dropout: BERT's hidden and attention dropout.
    """

    def __init__(
        self,
        vocab_size: int = 30000,
        hidden: int = 768,
        layers: int = 6,
        heads: int = 6,
        ffn_dim: int = 1536,
        max_length: int = 256,
        visual_dim: int = 768,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn_dim,
            max_position_embeddings=max_length,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            attn_implementation="eager",
        )
        self.bert = BertModel(self.config, add_pooling_layer=False)
        self.visual_proj = nn.Linear(visual_dim, hidden)
        self.fusion = ContextFusionLayer(hidden, heads, ffn_dim, dropout, self.config.layer_norm_eps)
        self.mlm_head = BertOnlyMLMHead(self.config)
        # transformers ties the head's output bias to its decoder only inside its own models; share it here so
        # that no parameter is left without a gradient (DDP refuses unused parameters).
        self.mlm_head.predictions.bias = self.mlm_head.predictions.decoder.bias

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, fused: torch.Tensor | None = None
    ):
        """The BERT encoder over ``fused`` (B, T, H), or over the plain embeddings when ``fused`` is None."""
        if fused is None:
            fused = self.bert.embeddings(input_ids=input_ids)
        mask = additive_attention_mask(attention_mask, fused.dtype)
        return self.bert.encoder(fused, attention_mask=mask).last_hidden_state

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.visual_proj(visual)  # (B, V, H)
        global_token = visual.mean(dim=1, keepdim=True)  # (B, 1, H): mean of the visible patches
        embedded = self.bert.embeddings(input_ids=input_ids)
        fused, cross_weights = self.fusion(embedded, attention_mask, visual, global_token)
        hidden = self.encode(input_ids, attention_mask, fused)
        return self.mlm_head(hidden), cross_weights

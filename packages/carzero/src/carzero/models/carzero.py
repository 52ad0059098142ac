"""The CARZero model: image encoder, text encoder and the shared Similarity Representation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carzero.models.image_encoder import ImageEncoder
from carzero.models.similarity import SimilarityRepresentation
from carzero.models.text_encoder import TextEncoder


def symmetric_cross_entropy(similarity: torch.Tensor) -> torch.Tensor:
    """L(S) = 1/2 [CE(S, arange B) + CE(S^T, arange B)]; S is (B, B) logits with the pairs on the diagonal."""
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (B, B), got {tuple(similarity.shape)}")
    targets = torch.arange(similarity.shape[0], device=similarity.device)
    return 0.5 * (F.cross_entropy(similarity, targets) + F.cross_entropy(similarity.t(), targets))


def carzero_loss(s_i2t: torch.Tensor, s_t2i: torch.Tensor) -> torch.Tensor:
    """CARZero's training loss: L(S_i2t) + L(S_t2i), both (B, B) raw logits, no temperature."""
    return symmetric_cross_entropy(s_i2t) + symmetric_cross_entropy(s_t2i)


class CARZero(nn.Module):
    """Cross-attention alignment for zero-shot classification (Lai et al., CVPR 2024).

    Args:
        image_encoder: returns (global (B, Di), local (B, N, Di)) for (B, 3, H, W) images.
        text_encoder: a `TextEncoder` returning (sentence (B, Dt), words (B, W, Dt), word_mask (B, W)).
        fusion_depth, fusion_heads, fusion_ffn_dim, dropout, head: see `SimilarityRepresentation`.
        mask_padding_words: if True, the text-to-image direction ignores the zero-padded word slots; the
            reference attends to them (False, default).

    When Di != Dt (never in the paper's ViT-B + BERT-base pairing) a Linear layer maps image tokens to Dt;
    otherwise the image tokens pass unchanged.

    `forward(images, input_ids, attention_mask, continuation_mask)` returns S_i2t (B_img, B_txt) and
    S_t2i (B_txt, B_img), raw logits; S_i2t[i, t] scores image i (memory) against text t (query).
    """

    def __init__(
        self,
        image_encoder: ImageEncoder | nn.Module,
        text_encoder: TextEncoder,
        fusion_depth: int = 4,
        fusion_heads: int = 4,
        fusion_ffn_dim: int = 1024,
        dropout: float = 0.1,
        head: str = "linear",
        mask_padding_words: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        dim = text_encoder.embed_dim
        image_dim = getattr(image_encoder, "embed_dim", dim)
        self.image_projection = nn.Identity() if image_dim == dim else nn.Linear(image_dim, dim)
        self.fusion = SimilarityRepresentation(dim, fusion_depth, fusion_heads, fusion_ffn_dim, dropout, head)
        self.mask_padding_words = mask_padding_words

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> global (B, D) and memory (B, 1 + N, D) = [CLS; patches]."""
        cls_token, patches = self.image_encoder(images)
        memory = self.image_projection(torch.cat([cls_token.unsqueeze(1), patches], dim=1))
        return memory[:, 0], memory

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continuation_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, L) tokens -> sentence (B, D), memory (B, 1 + W, D) = [sentence; words], padding or None."""
        sentence, words, word_mask = self.text_encoder(input_ids, attention_mask, continuation_mask)
        memory = torch.cat([sentence.unsqueeze(1), words], dim=1)
        padding = None
        if self.mask_padding_words:
            padding = torch.cat([torch.zeros_like(word_mask[:, :1]), ~word_mask], dim=1)
        return sentence, memory, padding

    def similarities(
        self,
        image_global: torch.Tensor,
        image_memory: torch.Tensor,
        text_sentence: torch.Tensor,
        text_memory: torch.Tensor,
        text_padding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """S_i2t (B_img, B_txt) and S_t2i (B_txt, B_img); the same fusion module serves both directions."""
        s_i2t = self.fusion(image_memory, text_sentence)
        s_t2i = self.fusion(text_memory, image_global, text_padding)
        return s_i2t, s_t2i

    def zero_shot_scores(
        self,
        image_global: torch.Tensor,
        image_memory: torch.Tensor,
        prompt_sentence: torch.Tensor,
        prompt_memory: torch.Tensor,
        prompt_padding: torch.Tensor | None = None,
        prompt_keys_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """(S_i2t + S_t2i^T) / 2: (B_img, C) raw logits for C class prompts (higher = more likely).

        ``prompt_keys_values`` = ``self.fusion.memory_keys_values(prompt_memory)``, computed once for all
        batches, skips re-projecting the prompts' tokens in the text->image direction (same result).
        """
        s_i2t = self.fusion(image_memory, prompt_sentence)
        s_t2i = self.fusion(prompt_memory, image_global, prompt_padding, keys_values=prompt_keys_values)
        return 0.5 * (s_i2t + s_t2i.t())

    def image_attention_maps(self, image_memory: torch.Tensor, prompt_sentence: torch.Tensor) -> torch.Tensor:
        """Where each prompt looks in each image: the image->text cross-attention on the patch tokens.

        Args:
            image_memory: (B, 1 + N, D) [CLS; patches] from `encode_image`.
            prompt_sentence: (P, D) prompt sentence embeddings (the i2t queries).

        Returns:
            (B, P, N) attention weights on the N patches, averaged over layers and heads (the CLS share is
            left out, so a row sums to at most 1). Reshape N to the patch grid for a heatmap.
        """
        _, maps = self.fusion(image_memory, prompt_sentence, return_attention=True)
        weights = torch.stack(maps).mean(dim=(0, 2))  # (B, P, 1 + N): mean over layers and heads
        return weights[..., 1:]

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        continuation_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image_global, image_memory = self.encode_image(images)
        sentence, text_memory, text_padding = self.encode_text(input_ids, attention_mask, continuation_mask)
        return self.similarities(image_global, image_memory, sentence, text_memory, text_padding)

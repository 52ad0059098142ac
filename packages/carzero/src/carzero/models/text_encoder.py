"""BERT-type text encoder of CARZero: last-4-layer token features, word pieces merged into words."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def continuation_mask_from_tokens(
    tokens: Sequence[Sequence[str]], length: int | None = None, continuation_prefix: str = "##"
) -> torch.Tensor:
    """Mark the word pieces that continue the previous word (WordPiece ``##`` pieces).

    Args:
        tokens: per text, its token strings as the tokenizer produced them (special tokens included).
        length: pad every row to this length (default: the longest row).
        continuation_prefix: the marker of a continuation piece ("##" for BERT WordPiece).

    Returns:
        (B, L) bool, True where a token continues the word before it.
    """
    length = max((len(row) for row in tokens), default=0) if length is None else length
    mask = torch.zeros(len(tokens), length, dtype=torch.bool)
    for row, text_tokens in enumerate(tokens):
        for col, token in enumerate(text_tokens[:length]):
            mask[row, col] = token.startswith(continuation_prefix)
    return mask


def merge_word_pieces(
    token_features: torch.Tensor,
    attention_mask: torch.Tensor,
    continuation_mask: torch.Tensor,
    max_words: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the features of the pieces of each word; zero-pad to `max_words` positions.

    Special tokens ([CLS], [SEP]) are words of their own, as in the reference. Padding tokens
    (attention_mask 0) are dropped.

    Args:
        token_features: (B, L, D) float.
        attention_mask: (B, L) {0, 1}.
        continuation_mask: (B, L) bool, True for "##" pieces.
        max_words: output length W >= L.

    Returns:
        word_features (B, W, D) with zeros after the last word, and word_mask (B, W) bool.
    """
    batch, length, dim = token_features.shape
    if length > max_words:
        raise ValueError(f"token sequence of length {length} is longer than max_words={max_words}")
    valid = attention_mask.bool()
    starts = valid & ~continuation_mask.bool()
    # Index of the word each token belongs to: number of word starts up to and including it, minus 1.
    word_index = (starts.long().cumsum(dim=1) - 1).clamp(min=0)
    features = token_features * valid.unsqueeze(-1).to(token_features.dtype)
    words = token_features.new_zeros(batch, max_words, dim)
    words = words.scatter_add(1, word_index.unsqueeze(-1).expand(-1, -1, dim), features)
    num_words = starts.sum(dim=1)  # (B,)
    word_mask = torch.arange(max_words, device=words.device).unsqueeze(0) < num_words.unsqueeze(1)
    return words, word_mask


class TextEncoder(nn.Module):
    """Wraps a Hugging Face BERT-type encoder into CARZero's text features.

    Token features are the sum of the last `last_n_layers` hidden states; word pieces are merged into
    words by summing; words are zero-padded to `max_words` positions; the sentence embedding is the mean
    over all `max_words` positions, padding included (the reference's choice). No projection, no norm.

    Args:
        backbone: a transformers encoder (e.g. `BertModel`) whose forward accepts ``input_ids``,
            ``attention_mask`` and ``output_hidden_states=True``.
        last_n_layers: number of final hidden states summed (4 in the paper).
        max_words: padded word length W (97 in the paper, equal to the tokenizer's max_length).

    Input: input_ids, attention_mask, continuation_mask, each (B, L) with L <= max_words.
    Output: sentence (B, D) and words (B, W, D), plus word_mask (B, W) bool.
    """

    def __init__(self, backbone: nn.Module, last_n_layers: int = 4, max_words: int = 97) -> None:
        super().__init__()
        self.backbone = backbone
        self.last_n_layers = last_n_layers
        self.max_words = max_words
        self.embed_dim = int(backbone.config.hidden_size)

    def forward_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D) sum of the last `last_n_layers` hidden states."""
        outputs = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = outputs.hidden_states
        if len(hidden) < self.last_n_layers:
            raise ValueError(
                f"text backbone returns {len(hidden)} hidden states; "
                f"last_n_layers={self.last_n_layers} needs more"
            )
        return torch.stack(hidden[-self.last_n_layers :], dim=0).sum(dim=0)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continuation_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.forward_features(input_ids, attention_mask)
        words, word_mask = merge_word_pieces(tokens, attention_mask, continuation_mask, self.max_words)
        sentence = words.mean(dim=1)  # mean over the padded length W, zeros included
        return sentence, words, word_mask

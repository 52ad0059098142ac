"""Turn sentences into the token tensors `carzero.models.TextEncoder` expects."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from carzero.models.text_encoder import continuation_mask_from_tokens


class TextTokenizer:
    """Tokenise sentences for CARZero's text encoder and mark word-piece continuations.

    Args:
        tokenizer: a Hugging Face tokenizer (``__call__`` and ``convert_ids_to_tokens``).
        max_length: truncation length in tokens (97 in the paper, equal to the encoder's `max_words`).
        continuation_prefix: marker of continuation pieces ("##" for WordPiece).

    Batches are padded to their longest row, not to `max_length`: the encoder pads words to `max_words`
    itself, so the features are the same and short prompts are cheaper.

    Returns (from ``__call__``): dict with input_ids, attention_mask (B, L) long and
    continuation_mask (B, L) bool.
    """

    def __init__(self, tokenizer, max_length: int = 97, continuation_prefix: str = "##") -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.continuation_prefix = continuation_prefix

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        tokens = [self.tokenizer.convert_ids_to_tokens(row) for row in encoded["input_ids"].tolist()]
        continuation = continuation_mask_from_tokens(
            tokens, encoded["input_ids"].shape[1], continuation_prefix=self.continuation_prefix
        )
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "continuation_mask": continuation,
        }

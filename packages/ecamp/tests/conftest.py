"""Shared fixtures: a hand-made WordPiece vocabulary and a tiny ECAMP."""

from __future__ import annotations

import pytest

from ecamp.text import wordpiece_from_vocab

# "[MASK]" is deliberately not at index 4 and "." not at a usual index: ids must come from the tokenizer.
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "there", "[MASK]", "is", "no", "evidence", "of", ".", "pleural",
    "effusion", "mild", "cardiomegaly", "small", "left", "right", "heart", "size", "normal", "lungs", "are",
    "clear", "pneu", "##mo", "##thorax", "edema", "opacity", "the", "a", "and", "with", "effusions",
]  # fmt: skip


@pytest.fixture()
def tokenizer():
    return wordpiece_from_vocab(VOCAB)

"""Shared fixtures: medzoo.testing's tiny BERT (whose vocabulary splits "pneumothorax" into
"pneu ##mo ##thorax") with a working tokenizer, and a tiny CARZero on it.

`shared_data` and the one-thread limit come from the core pytest plugin `medzoo.testing`.
"""

from __future__ import annotations

import pytest
import torch

from medzoo.testing import TINY_VOCAB, write_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """The core's tiny BERT, its tokenizer rebuilt from the vocabulary itself.

    With transformers 5, the core's tokenizer (built from `vocab_file`) maps every word to [UNK]; the
    word-piece tests need the real splits, so the tokenizer is rebuilt from the vocabulary dict.
    """
    from transformers import BertTokenizerFast

    folder = write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
    vocab = {token: i for i, token in enumerate(TINY_VOCAB)}
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_parts(tiny_bert_dir):
    """(CARZero model `tiny` with the tiny BERT, its TextTokenizer)."""
    from carzero import create_model
    from carzero.factory import load_tokenizer

    torch.manual_seed(0)
    model = create_model("tiny", text_model=str(tiny_bert_dir))
    return model, load_tokenizer("tiny", text_model=str(tiny_bert_dir))

"""Shared fixtures: a tiny BERT whose vocabulary the test writes itself, and a tiny CARZero."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Word pieces are chosen so that "pneumothorax" splits into "pneu ##mo ##thorax".
TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "there", "is", "no", "a", "small", "large", "left", "right", "pleural", "effusion", "pneu", "##mo",
    "##thorax", "cardio", "##megaly", "atelectasis", "nodule", "mass", "edema", "pneumonia", "normal",
    "heart", "size", "lungs", "are", "clear", "of", "the", "and", "with", "finding", "mild", "lung",
    "opacity", "consolidation", "fracture", "emphysema", "fibrosis", "hernia", "infiltration",
    "thickening", "enlarged", "cardiomediastinal", "silhouette", "acute", "process", "seen", ".", ",",
]  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"

# The models here are tiny: one thread avoids oversubscription on shared CI cores (10x faster here).
torch.set_num_threads(1)


def write_tiny_bert(folder: Path, hidden: int = 32, layers: int = 4) -> Path:
    """Save a randomly initialised BERT (hidden 32) and its WordPiece tokenizer to `folder`."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(TINY_VOCAB)}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture()
def tiny_parts(tiny_bert_dir):
    """(CARZero model with a tiny ViT and tiny BERT, TextTokenizer)."""
    from transformers import AutoTokenizer, BertModel

    from carzero.models import CARZero, TextEncoder, image_encoder
    from carzero.text import TextTokenizer

    torch.manual_seed(0)
    text = TextEncoder(BertModel.from_pretrained(tiny_bert_dir), last_n_layers=4, max_words=24)
    model = CARZero(
        image_encoder("tiny"), text, fusion_depth=2, fusion_heads=2, fusion_ffn_dim=64, dropout=0.0
    )
    tokenizer = TextTokenizer(AutoTokenizer.from_pretrained(tiny_bert_dir), max_length=24)
    return model, tokenizer

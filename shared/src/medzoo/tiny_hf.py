"""Tiny, randomly initialised Hugging Face models saved to a folder, for tests and offline demos.

Nothing is downloaded: a BERT with a WordPiece vocabulary, or a Llama-architecture causal LM with a byte-level
BPE tokenizer trained on a few sentences, is built from a config (seeded) and written with
``save_pretrained``, so that the real ``from_pretrained`` loading path is exercised. ``medzoo.testing``
exposes them as pytest fixtures; a package's demo may call them at run time (e.g. a demo language model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["TINY_CORPUS", "TINY_VOCAB", "write_tiny_bert", "write_tiny_causal_lm"]

# Word pieces chosen so that "pneumothorax" splits into "pneu ##mo ##thorax".
TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "there", "is", "no", "a", "small", "large", "left", "right", "pleural", "effusion", "pneu", "##mo",
    "##thorax", "cardio", "##megaly", "atelectasis", "nodule", "mass", "edema", "pneumonia", "normal",
    "heart", "size", "lungs", "are", "clear", "of", "the", "and", "with", "finding", "mild", "lung",
    "opacity", "consolidation", "fracture", "emphysema", "fibrosis", "hernia", "infiltration",
    "thickening", "enlarged", "cardiomediastinal", "silhouette", "acute", "process", "seen", ".", ",",
]  # fmt: skip

# A few report-like sentences: the byte-level BPE of the tiny causal LM is trained on them.
TINY_CORPUS = [
    "There is a small left pleural effusion.",
    "No acute cardiopulmonary process. The lungs are clear.",
    "The liver, spleen and kidneys are normal in size.",
    "A 2 cm nodule is seen in the right lower lobe.",
    "Question: is there a pleural effusion? Answer: yes.",
    "Findings: mild cardiomegaly. Impression: no pneumothorax.",
]


def write_tiny_bert(
    folder: Path, hidden: int = 32, layers: int = 4, vocab: Sequence[str] = TINY_VOCAB
) -> Path:
    """Save a randomly initialised BERT (seeded) and its WordPiece tokenizer to ``folder``; return it."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Built from the vocabulary dict: with transformers 5, `vocab_file=` gives a tokenizer that maps every
    # word to [UNK].
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def write_tiny_causal_lm(
    folder: Path,
    hidden: int = 32,
    layers: int = 2,
    corpus: Sequence[str] = TINY_CORPUS,
    extra_tokens: Sequence[str] = ("<image>",),
    *,
    vocab_size: int = 300,
    heads: int = 2,
    max_positions: int = 256,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised Llama-architecture causal LM (seeded) and a byte-level BPE tokenizer.

    The tokenizer is trained on ``corpus`` with the special tokens ``<s>``, ``</s>``, ``<pad>``, ``<unk>`` and
    ``extra_tokens`` (default ``<image>``), so a vision-language wrapper finds its placeholder token.
    Deterministic for a fixed corpus and seed.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<s>", "</s>", "<unk>", *extra_tokens]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=list(extra_tokens),
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder

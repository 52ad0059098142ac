"""The language side: load any Hugging Face causal LM + tokenizer, and build the demo's tiny one offline."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medzoo.errors import MedzooDataError
from medzoo.weights import load_hf_model, load_hf_tokenizer

IMAGE_TOKEN = "<image>"


def write_tiny_language_model(
    folder: str | os.PathLike, corpus: Sequence[str], hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """Save a randomly initialised (seeded) Llama-architecture causal LM and a byte-level BPE tokenizer
    trained on ``corpus``, with ``<image>`` as an added special token. Deterministic for a fixed corpus.

    This is the demo's language model: it stands in for a pretrained LLM, which cannot be downloaded here
    (``medzoo.tiny_hf.write_tiny_causal_lm`` with the demo's sizes: 400-token vocabulary, 4 heads, 512
    positions).
    """
    from medzoo.tiny_hf import write_tiny_causal_lm

    return write_tiny_causal_lm(
        Path(folder),
        hidden,
        layers,
        corpus,
        (IMAGE_TOKEN,),
        vocab_size=400,
        heads=4,
        max_positions=512,
        seed=seed,
    )


def load_language_model(name_or_path: str | os.PathLike, **kwargs: Any) -> tuple[Any, Any, int]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a local folder (or a hub id when online).

    The tokenizer must know ``<image>``; where it does not, the token is added and the embeddings resized.
    Returns (model, tokenizer, image_token_id). The tokenizer pads on the left (generation).
    """
    from transformers import AutoModelForCausalLM

    tokenizer = load_hf_tokenizer(name_or_path)
    model = load_hf_model(name_or_path, AutoModelForCausalLM, **kwargs)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise MedzooDataError(name_or_path, "a tokenizer with neither pad nor eos token", "one of them")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer, int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))

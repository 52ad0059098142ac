"""Report text for ECAMP: the WordPiece tokenizer trained on the reports, LLM-context insertion,
entity-aware masking and the re-balanced token weights. Plain Python and numpy; no torch modules.

Token ids always come from the tokenizer (``[PAD]``, ``[MASK]``, ``.`` and the down-weighted phrases are
looked up in its vocabulary), never hard-coded.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from medzoo.errors import MedzooDataError

__all__ = [
    "DOWNWEIGHTED_PHRASES",
    "SPECIAL_TOKENS",
    "EntityAwareMasker",
    "MaskedReport",
    "insert_context",
    "load_entities",
    "load_entity_context",
    "load_tokenizer",
    "rebalanced_weights",
    "rule_based_context",
    "train_wordpiece",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
DOWNWEIGHTED_PHRASES = ("there is no evidence of", "there is no")
"""Phrases whose tokens weigh ``low_weight`` in the MLM loss, longest first (a match consumes its tokens)."""


def _resource(name: str) -> str:
    return (importlib.resources.files("ecamp") / "resources" / name).read_text(encoding="utf-8")


def load_entities(path: str | Path | None = None) -> tuple[str, ...]:
    """The entity words, one per line (``#`` comments); default the shipped 44-word list of the reference."""
    text = _resource("entities.txt") if path is None else Path(path).read_text(encoding="utf-8")
    words = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if not words:
        raise MedzooDataError(path or "entities.txt", "no entity words", "one entity word per line")
    return words


def load_entity_context(path: str | Path | None = None) -> dict[str, str]:
    """``{entity: sentence}`` for the rule-based context (default: the shipped ``entity_context.yaml``)."""
    text = _resource("entity_context.yaml") if path is None else Path(path).read_text(encoding="utf-8")
    table = yaml.safe_load(text)
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise MedzooDataError(
            path or "entity_context.yaml", "another structure", "a mapping entity -> sentence"
        )
    return {str(k): v for k, v in table.items()}


def rule_based_context(report: str, table: dict[str, str] | None = None) -> str:
    """The context sentences of the entity words found in ``report`` (whole lower-case words, first
    occurrence order), joined by spaces; "" when the report names no entity."""
    table = load_entity_context() if table is None else table
    lowered = {k.lower(): v for k, v in table.items()}
    seen: list[str] = []
    for word in re.findall(r"[a-z]+", report.lower()):
        if word in lowered and word not in seen:
            seen.append(word)
    return " ".join(lowered[word] for word in seen)


def insert_context(report: str, context: str, rng: np.random.Generator, probability: float = 0.8) -> str:
    """With ``probability``, insert ``context`` at a random sentence boundary of ``report`` (reference).

    The report is split at '.'; the insertion point is uniform over the ``n + 1`` boundaries of the ``n``
    pieces; pieces are re-joined with '.', and '..' collapses to '.'. Otherwise the report is unchanged.
    """
    if not context or rng.random() >= probability:
        return report
    pieces = report.split(".")
    location = int(rng.integers(0, len(pieces) + 1))
    text = "".join(p + "." for p in pieces[:location]) + context + "".join(p + "." for p in pieces[location:])
    return text.replace("..", ".")


def train_wordpiece(texts: Iterable[str], vocab_size: int = 30000, min_frequency: int = 2) -> Tokenizer:
    """Train a lower-casing BERT WordPiece tokenizer on report texts (the ``tokenizers`` library).

    The post-processor prepends ``[CLS]`` (the reference's input is ``"[CLS] " + report``, without [SEP]).
    """
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS)
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    _add_cls(tokenizer)
    return tokenizer


def wordpiece_from_vocab(vocab: Sequence[str]) -> Tokenizer:
    """A tokenizer with a given WordPiece vocabulary (tests, hand-made examples); same pipeline as trained."""
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    _add_cls(tokenizer)
    return tokenizer


def _add_cls(tokenizer: Tokenizer) -> None:
    cls_id = tokenizer.token_to_id("[CLS]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", special_tokens=[("[CLS]", cls_id)]
    )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer JSON written by :func:`train_wordpiece` (``Tokenizer.save``) and check its tokens."""
    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "a tokenizers JSON file (written at the first fit)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the library raises a bare Exception on malformed JSON
        raise MedzooDataError(path, f"an unreadable tokenizer ({error})", "a tokenizers JSON file") from None
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise MedzooDataError(path, f"a vocabulary without {missing}", f"the special tokens {SPECIAL_TOKENS}")
    return tokenizer


@dataclass
class MaskedReport:
    """One encoded, masked report (all lists of length ``max_length``).

    ids: original token ids (the MLM labels); masked_ids: ids with [MASK] substituted; masked: True where
    substituted; entity: True at entity tokens; context: positions of the context tokens before entities;
    attention: 1 for tokens, 0 for padding; weights: the re-balanced loss weights.
    """

    ids: list[int]
    masked_ids: list[int]
    masked: list[bool]
    entity: list[bool]
    context: list[int]
    attention: list[int]
    weights: list[float]


class EntityAwareMasker:
    """ECAMP's entity-aware masking and re-balanced weights on tokenizer ids.

    Masking of each non-padding position ``1 .. max_length - 2`` (position 0 is [CLS]; like the reference the
    last position is never masked): when the report holds an entity token, entity tokens are masked with
    ``p_entity`` (.75) and every other token with ``p_other`` (.70); without entities every token with
    ``p_no_entity`` (.75). A ``##`` piece copies the mask of the token before it (so a whole word is masked or
    kept). The ``context_size`` (2) tokens before each entity are its context positions ('.' tokens are
    skipped; with ``context_stops_at_sentence`` the window stops at a '.' instead of reaching into the
    previous sentence); they are masked like other tokens and up-weighted by :func:`rebalanced_weights`.

    Args:
        tokenizer: the WordPiece tokenizer (its ids are used throughout).
        max_length: padded length (paper: 256).
        entities: entity words (default :func:`load_entities`).
        p_entity, p_other, p_no_entity: masking probabilities.
        context_size: tokens before an entity that form its context.
        context_stops_at_sentence: stop the context window at '.' (the reference skips the '.' and goes on).
        low_weight: weight of the tokens of :data:`DOWNWEIGHTED_PHRASES` (.05).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int = 256,
        entities: Sequence[str] | None = None,
        p_entity: float = 0.75,
        p_other: float = 0.70,
        p_no_entity: float = 0.75,
        context_size: int = 2,
        context_stops_at_sentence: bool = False,
        low_weight: float = 0.05,
        phrases: Sequence[str] = DOWNWEIGHTED_PHRASES,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.entities = frozenset(load_entities() if entities is None else entities)
        self.p_entity, self.p_other, self.p_no_entity = p_entity, p_other, p_no_entity
        self.context_size = int(context_size)
        self.context_stops_at_sentence = context_stops_at_sentence
        self.low_weight = float(low_weight)
        self.vocab = {i: t for t, i in tokenizer.get_vocab().items()}
        self.pad_id = tokenizer.token_to_id("[PAD]")
        self.mask_id = tokenizer.token_to_id("[MASK]")
        self.period_id = tokenizer.token_to_id(".")
        self.phrases = sorted(
            (tokenizer.encode(p, add_special_tokens=False).ids for p in phrases), key=len, reverse=True
        )
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.enable_padding(length=self.max_length, pad_id=self.pad_id, pad_token="[PAD]")

    def encode(self, text: str) -> tuple[list[int], list[int]]:
        """``[CLS] text`` -> (ids, attention), padded/truncated to ``max_length``."""
        encoding = self.tokenizer.encode(text)
        return list(encoding.ids), list(encoding.attention_mask)

    def mask(
        self, ids: Sequence[int], rng: np.random.Generator
    ) -> tuple[list[int], list[bool], list[bool], list[int]]:
        """Entity-aware masking of one id sequence -> (masked_ids, masked, entity, context positions)."""
        n = len(ids)
        tokens = [self.vocab.get(int(i), "") for i in ids]
        is_entity = [t in self.entities for t in tokens]
        has_entity = any(is_entity[1 : n - 1])
        masked, context = [False] * n, []
        for i in range(1, n - 1):
            if ids[i] == self.pad_id:
                break
            if tokens[i].startswith("##"):
                masked[i] = masked[i - 1]
                continue
            if is_entity[i]:
                self._add_context(ids, i, context)
                masked[i] = bool(rng.random() < self.p_entity)
            else:
                masked[i] = bool(rng.random() < (self.p_other if has_entity else self.p_no_entity))
        masked_ids = [self.mask_id if m else int(t) for t, m in zip(ids, masked, strict=True)]
        return masked_ids, masked, is_entity, context

    def _add_context(self, ids: Sequence[int], position: int, context: list[int]) -> None:
        for back in range(1, self.context_size + 1):
            p = position - back
            if p <= 0:
                break
            if ids[p] == self.period_id:
                if self.context_stops_at_sentence:
                    break
                continue
            if p not in context:
                context.append(p)

    def __call__(self, text: str, rng: np.random.Generator) -> MaskedReport:
        ids, attention = self.encode(text)
        masked_ids, masked, entity, context = self.mask(ids, rng)
        weights = rebalanced_weights(ids, context, self.phrases, self.low_weight)
        return MaskedReport(ids, masked_ids, masked, entity, context, attention, weights)


def rebalanced_weights(
    ids: Sequence[int], context: Sequence[int], phrases: Sequence[Sequence[int]], low_weight: float = 0.05
) -> list[float]:
    """ECAMP's re-balanced MLM weights for one padded id sequence of length ``L``.

    Tokens of each occurrence of a phrase (longest first; a match consumes its tokens) weigh ``low_weight``.
    When some tokens were down-weighted, the weight they lost is given back so the total stays ``L``
    (padding included, as the reference): to the context positions when there are any, scaling them by
    ``e = ((1 - low) * (d - c_d) + c) / (c - (1 - low) * c_d)`` (``d`` down-weighted tokens, ``c`` context
    positions, ``c_d`` of them down-weighted), otherwise to every token, scaling by ``L / (L - (1 - low) d)``.
    Without a phrase all weights are 1.
    """
    length = len(ids)
    weights = [1.0] * length
    longest = max((len(p) for p in phrases), default=0)
    diminished: set[int] = set()
    i = 0
    while i < length - longest + 1:
        for phrase in phrases:
            if list(ids[i : i + len(phrase)]) == list(phrase):
                for p in range(i, i + len(phrase)):
                    weights[p] = low_weight
                    diminished.add(p)
                i += len(phrase)
                break
        else:
            i += 1
    lost = 1.0 - low_weight
    d, c = len(diminished), len(context)
    c_d = sum(p in diminished for p in context)
    if c and d:
        expand = (lost * (d - c_d) + c) / (c - lost * c_d)
        for p in context:
            weights[p] *= expand
    elif d:
        weights = [w * length / (length - lost * d) for w in weights]
    return weights

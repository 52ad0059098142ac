"""Prompt alignment: report rewriting into CARZero's standard form, and the per-class inference prompts.

Training text in CARZero is the report impression plus an LLM-rewritten, standardised report; at inference
every class is a prompt in the same standard form ("there is pleural effusion"). Both templates ship as
package data under ``carzero/prompts/`` and can be overridden by a file of your own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medzoo.errors import MedzooDataError

# ----------------------------------------------------------------------------------------------------
# Shipped templates
# ----------------------------------------------------------------------------------------------------


def _packaged(name: str) -> str:
    return (resources.files("carzero") / "prompts" / name).read_text(encoding="utf-8")


def load_align_template(path: str | Path | None = None) -> str:
    """The LLM prompt template for report alignment (shipped `align_report.txt` unless `path`).

    It must contain ``{report}``, replaced by the report text.
    """
    text = _packaged("align_report.txt") if path is None else Path(path).read_text(encoding="utf-8")
    if "{report}" not in text:
        raise MedzooDataError(path or "align_report.txt", "a template without {report}", "a {report} slot")
    return text


def load_class_prompts(path: str | Path | None = None) -> dict[str, Any]:
    """Per-class inference prompts: ``{"default": "there is {finding}", "classes": {name: str | [str]}}``.

    `path` (YAML) overrides the shipped `class_prompts.yaml`; its entries are merged over the shipped ones.
    """
    shipped = yaml.safe_load(_packaged("class_prompts.yaml"))
    if path is None:
        return shipped
    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "a YAML file with 'default' and/or 'classes'")
    user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(user, dict) or not set(user) <= {"default", "classes"}:
        raise MedzooDataError(path, f"keys {sorted(user) if isinstance(user, dict) else type(user)}",
                              "a mapping with 'default' (str) and/or 'classes' ({name: prompt})")  # fmt: skip
    return {
        "default": user.get("default", shipped["default"]),
        "classes": {**shipped["classes"], **(user.get("classes") or {})},
    }


def class_prompts(class_names: Sequence[str], table: dict[str, Any] | None = None) -> list[list[str]]:
    """The prompts of each class: a list of sentences per class (their scores are averaged)."""
    table = table or load_class_prompts()
    out = []
    for name in class_names:
        entry = table["classes"].get(name)
        if entry is None:
            entry = table["default"].format(finding=name.replace("_", " ").lower())
        prompts = [entry] if isinstance(entry, str) else list(entry)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise MedzooDataError(
                f"prompts for {name!r}", repr(entry), "a non-empty sentence or list of them"
            )
        out.append(prompts)
    return out


# ----------------------------------------------------------------------------------------------------
# Rule-based alignment (no LLM)
# ----------------------------------------------------------------------------------------------------

# Canonical finding -> regular expression of how reports mention it.
FINDING_PATTERNS: dict[str, str] = {
    "pleural effusion": r"effusions?|pleural fluid",
    "pneumothorax": r"pneumothora(?:x|ces)",
    "cardiomegaly": r"cardiomegaly|enlarged (?:heart|cardiac silhouette)|heart (?:size )?is enlarged",
    "atelectasis": r"atelecta(?:sis|tic)",
    "consolidation": r"consolidations?",
    "pneumonia": r"pneumonia|infectious process",
    "pulmonary edema": r"(?:pulmonary )?edema|vascular congestion",
    "nodule": r"nodules?|nodular",
    "mass": r"mass(?:es)?",
    "emphysema": r"emphysema(?:tous)?|hyperinflat\w*",
    "fibrosis": r"fibros(?:is|tic)|scarring",
    "fracture": r"fractures?",
    "pleural thickening": r"pleural thickening",
    "hernia": r"hernia",
    "lung opacity": r"opacit(?:y|ies)|opacification",
    "infiltration": r"infiltrat(?:e|es|ion)",
    "calcification": r"calcifi\w+|calcinosis|granuloma\w*",
    "support device": r"tube|line|catheter|pacemaker|wires?",
}
_NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of|resolved|clear of|absence of)\b")
_NOTHING_FOUND = re.compile(r"\b(?:normal|unremarkable|clear|stable)\b")


def states_a_finding(sentence: str) -> bool:
    """True for a sentence that asserts something present: no negation cue ("no", "without", ...) and no
    normality cue ("normal", "unremarkable", "clear", "stable"). E.g. "there is left pleural effusion"."""
    text = sentence.lower()
    return not _NEGATION.search(text) and not _NOTHING_FOUND.search(text)


_NORMAL = re.compile(r"\b(?:normal|unremarkable|clear|no acute)\b")
_MODIFIERS = re.compile(r"\b(mild|moderate|severe|small|large|minimal|trace|left|right|bilateral|basilar)\b")


def rule_based_align(report: str) -> str:
    """Rewrite a free-text report into the standard form with fixed rules (deterministic, no LLM).

    Each sentence (split at '.', ';' and newlines) is scanned for the findings in `FINDING_PATTERNS`; a
    mention becomes "there is [modifiers] <finding>." or, after a negation cue before it in the sentence
    ("no", "without", "negative for", ...), "there is no <finding>.". A report with findings of neither kind
    that calls something normal/clear becomes "there is no acute cardiopulmonary abnormality.".

    Raises MedzooDataError for an empty report.
    """
    if not isinstance(report, str) or not report.strip():
        raise MedzooDataError("report", repr(report), "non-empty report text")
    out: list[str] = []
    saw_normal = False
    for sentence in re.split(r"[.;\n]+", report.lower()):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        saw_normal |= bool(_NORMAL.search(sentence))
        for finding, pattern in FINDING_PATTERNS.items():
            match = re.search(rf"\b(?:{pattern})\b", sentence)
            if match is None:
                continue
            before = sentence[: match.start()]
            if _NEGATION.search(before):
                line = f"there is no {finding}."
            else:
                words = sorted({m.group(1) for m in _MODIFIERS.finditer(sentence)}, key=sentence.index)
                line = " ".join(["there is", *words, finding]) + "."
            if line not in out:
                out.append(line)
    if not out:
        out.append(
            "there is no acute cardiopulmonary abnormality."
            if saw_normal
            else "there is no definite finding."
        )
    return " ".join(out)


# ----------------------------------------------------------------------------------------------------
# LLM alignment
# ----------------------------------------------------------------------------------------------------


class LLMReportAligner:
    """Rewrite reports with any Hugging Face causal LM (local folder or hub id), greedy decoding.

    Args:
        model: folder or hub id of a causal LM (`AutoModelForCausalLM`).
        template: prompt template with ``{report}`` (default: the shipped `align_report.txt`).
        max_new_tokens: generation budget per report.
        fallback_to_rules: when the model produces no usable text, use `rule_based_align` instead.
        device: torch device string.

    ``__call__(reports)`` returns the standardised texts (list of str), one per report.
    """

    def __init__(
        self,
        model: str,
        template: str | None = None,
        max_new_tokens: int = 128,
        fallback_to_rules: bool = True,
        device: str = "cpu",
    ) -> None:
        import transformers

        from medzoo.weights import load_hf_model, load_hf_tokenizer

        self.tokenizer = load_hf_tokenizer(model)
        self.model = load_hf_model(model, cls=transformers.AutoModelForCausalLM).to(device).eval()
        self.template = load_align_template() if template is None else template
        self.max_new_tokens = max_new_tokens
        self.fallback_to_rules = fallback_to_rules
        self.device = device
        self.used_fallback = 0

    def _clean(self, text: str) -> str:
        # Keep the first paragraph: models often continue with another "Report:" block.
        text = re.split(r"\n\s*\n|Report:", text.strip())[0]
        return " ".join(text.split())

    def __call__(self, reports: Sequence[str]) -> list[str]:
        import torch

        out = []
        for report in reports:
            if not isinstance(report, str) or not report.strip():
                raise MedzooDataError("report", repr(report), "non-empty report text")
            prompt = self.template.format(report=report.strip())
            encoded = self.tokenizer(prompt, return_tensors="pt").to(self.device)
            pad_id = self.tokenizer.pad_token_id
            pad_id = self.tokenizer.eos_token_id if pad_id is None else pad_id
            with torch.no_grad():
                generated = self.model.generate(
                    **encoded, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad_id
                )
            new_tokens = generated[0, encoded["input_ids"].shape[1] :]
            text = self._clean(self.tokenizer.decode(new_tokens, skip_special_tokens=True))
            if not re.search(r"\w+\W+\w+", text):
                if not self.fallback_to_rules:
                    raise MedzooDataError(
                        "LLM output", repr(text), "a standardised report of two or more words"
                    )
                text = rule_based_align(report)
                self.used_fallback += 1
            out.append(text)
        return out

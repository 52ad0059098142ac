"""Entity-context distillation: an LLM (any Hugging Face causal LM) or a rule-based fallback describes the
entities a report names; the text becomes the ``llm_output`` column that pre-training inserts."""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path

from ecamp.text import load_entities, rule_based_context
from medzoo.errors import MedzooDataError

__all__ = ["LLMContextDistiller", "load_prompt", "rule_based_context"]


def load_prompt(path: str | Path | None = None) -> str:
    """The LLM prompt template (a ``{report}`` and an ``{entities}`` slot); default the shipped one."""
    if path is None:
        return (importlib.resources.files("ecamp") / "resources" / "distill_prompt.txt").read_text(
            encoding="utf-8"
        )
    text = Path(path).read_text(encoding="utf-8")
    if "{report}" not in text:
        raise MedzooDataError(path, "a template without {report}", "a prompt with a {report} slot")
    return text


class LLMContextDistiller:
    """Greedy generation with a causal LM: one entity-context paragraph per report.

    Args:
        model: a folder written by ``save_pretrained`` or a hub id (loaded with ``medzoo.weights``; offline
            the error says how to download it).
        template: prompt with ``{report}`` (and optionally ``{entities}``, the entity words found).
        max_new_tokens: generation budget per report.
        device: torch device.
    """

    def __init__(self, model: str, template: str, max_new_tokens: int = 128, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM

        from medzoo.weights import load_hf_model, load_hf_tokenizer

        self.tokenizer = load_hf_tokenizer(model)
        self.model = load_hf_model(model, AutoModelForCausalLM).to(device).eval()
        self.template, self.max_new_tokens, self.device = template, int(max_new_tokens), device
        self.entities = [e.lower() for e in load_entities()]

    def prompt(self, report: str) -> str:
        words = [e for e in self.entities if e in report.lower()]
        return self.template.replace("{entities}", ", ".join(words) or "none").replace("{report}", report)

    def __call__(self, reports: Sequence[str]) -> list[str]:
        import torch

        outputs = []
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        for report in reports:
            encoded = self.tokenizer(self.prompt(report), return_tensors="pt").to(self.device)
            with torch.no_grad():
                generated = self.model.generate(
                    **encoded, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad
                )
            text = self.tokenizer.decode(
                generated[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True
            )
            outputs.append(" ".join(text.split()))
        return outputs

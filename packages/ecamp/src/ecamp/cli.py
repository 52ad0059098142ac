"""``ecamp`` command line: pre-training (``fit|validate|test``), ``ecamp finetune fit|validate|test|predict
--task cls|seg`` and ``ecamp distill-reports``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecamp.data import ECAMPDataModule, FinetuneDataModule
from ecamp.module import ECAMPModule, FinetuneModule
from medzoo.lightning import Stage, cli


def distill_reports(
    input: Path,
    output: Path,
    report_column: str = "report",
    output_column: str = "llm_output",
    model: str | None = None,
    template: Path | None = None,
    max_new_tokens: int = 128,
    device: str = "cpu",
) -> Path:
    """Add LLM-distilled entity context to a reports CSV (any HF causal LM, or the rule-based fallback).

    Args:
        input: CSV with a report column (e.g. MIMIC-CXR reports with img_path, report).
        output: the same CSV with --output_column added (written atomically).
        report_column: column holding the report text.
        output_column: column to write (pre-training reads llm_output).
        model: folder or hub id of a Hugging Face causal LM; omit for the rule-based context (one shipped
            sentence per entity word found in the report).
        template: prompt template with {report} (and {entities}); default the shipped one.
        max_new_tokens: generation budget per report.
        device: torch device of the LLM.
    """
    from ecamp.distill import LLMContextDistiller, load_prompt
    from ecamp.text import rule_based_context
    from medzoo.io import read_text_column, write_csv

    table, reports = read_text_column(input, report_column)
    if model is None:
        table[output_column] = [rule_based_context(text) for text in reports]
    else:
        table[output_column] = LLMContextDistiller(model, load_prompt(template), max_new_tokens, device)(
            reports
        )
    path = write_csv(output, table)
    print(f"wrote {output_column} for {len(table)} reports to {path}")
    return path


COMMANDS: dict[str, Any] = {
    "distill-reports": distill_reports,
    "finetune": Stage(
        FinetuneModule, FinetuneDataModule, "fine-tune the pre-trained encoder: --task cls|seg"
    ),
}


def expand_task(argv: list[str]) -> list[str]:
    """``finetune ... --task seg`` -> ``--model.task seg --data.task seg`` (one switch for both)."""
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--task" and i + 1 < len(argv):
            out += [f"--model.task={argv[i + 1]}", f"--data.task={argv[i + 1]}"]
            i += 2
            continue
        if token.startswith("--task="):
            value = token.split("=", 1)[1]
            out += [f"--model.task={value}", f"--data.task={value}"]
        else:
            out.append(token)
        i += 1
    return out


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``ecamp`` console script (tests pass ``args``)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "finetune":
        argv = expand_task(argv)
    return cli(ECAMPModule, ECAMPDataModule, package="ecamp", args=argv, commands=COMMANDS,
               catch_errors=args is None)  # fmt: skip


if __name__ == "__main__":
    main()

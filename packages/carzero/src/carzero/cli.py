"""``carzero`` command line: Lightning's fit/validate/test plus zeroshot, evaluate and align-reports."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from carzero.data import (
    CARZeroDataModule,
    ImageFolderDataset,
    LabelledImageDataset,
    build_transform,
    load_test_set,
)
from carzero.module import CARZeroModule, frequency_groups, zero_shot_metrics
from medzoo.errors import MedzooDataError
from medzoo.lightning import cli


def load_module(ckpt: Path, device: str = "cpu", text_model: str | None = None) -> CARZeroModule:
    """Rebuild a `CARZeroModule` from a Lightning checkpoint (read with ``weights_only=True``)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise MedzooDataError(ckpt, "no such file", "a carzero Lightning checkpoint (.ckpt)")
    try:
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, or pickled objects weights_only refuses
        raise MedzooDataError(
            ckpt, f"an unreadable checkpoint ({type(error).__name__})", "a checkpoint of `carzero fit`"
        ) from error
    if not isinstance(raw, dict) or "state_dict" not in raw or "hyper_parameters" not in raw:
        raise MedzooDataError(
            ckpt, "a file without state_dict/hyper_parameters", "a checkpoint of `carzero fit`"
        )
    accepted = set(inspect.signature(CARZeroModule.__init__).parameters) - {"self", "optimizer", "scheduler"}
    hparams = {k: v for k, v in dict(raw["hyper_parameters"]).items() if k in accepted}
    if text_model is not None:
        hparams["text_model"] = text_model
    module = CARZeroModule(**hparams)
    module.load_state_dict(raw["state_dict"])
    return module.to(device).eval()


def _transform(module: CARZeroModule):
    # The paper resizes to 256 for a 224 crop; keep that ratio for other input sizes.
    return build_transform(False, resize=round(module.img_size * 256 / 224), crop=module.img_size)


def _score(
    module: CARZeroModule, dataset, class_names: list[str], batch_size: int, device: str
) -> np.ndarray:
    module.encode_prompts(class_names)  # computed once, reused for every batch
    scores = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        scores.append(module.zero_shot(batch["image"].to(device), class_names).float().cpu())
    return torch.cat(scores).numpy()


def zeroshot(
    images: Path,
    findings: list[str],
    ckpt: Path,
    output: Path = Path("carzero_scores.csv"),
    prompts: Path | None = None,
    text_model: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> Path:
    """Score every image in a folder against a list of findings (zero-shot) and write a CSV.

    Args:
        images: folder of chest X-rays (PNG, JPEG, DICOM, ...; searched recursively).
        findings: finding names, e.g. "Pneumonia,Effusion"; each becomes a prompt (see --prompts).
        ckpt: checkpoint written by `carzero fit`.
        output: CSV with one row per image: `image` (path relative to --images) then one column per
            finding holding the raw zero-shot logit (S_i2t + S_t2i^T)/2; higher = more likely.
        prompts: YAML overriding the shipped per-class prompts
            ({default: "there is {finding}", classes: {name: prompt}}).
        text_model: text-encoder folder to use instead of the one recorded in the checkpoint.
        batch_size: images per forward pass.
        device: torch device, e.g. "cpu" or "cuda".
    """
    from medzoo.io import write_csv

    findings = [f.strip() for f in findings if f.strip()]
    if not findings:
        raise MedzooDataError(
            "--findings", "no finding names", "a comma-separated list such as 'Pneumonia,Effusion'"
        )
    module = load_module(ckpt, device, text_model)
    if prompts is not None:
        module.prompts_path = str(prompts)
    dataset = ImageFolderDataset(images, _transform(module))
    scores = _score(module, dataset, findings, batch_size, device)
    table = pd.DataFrame(scores, columns=findings)
    table.insert(0, "image", [str(p.relative_to(Path(images))) for p in dataset.image_paths])
    path = write_csv(output, table)
    print(f"wrote {len(table)} images x {len(findings)} findings to {path}")
    return path


def evaluate(
    dataset: str,
    root: Path,
    ckpt: Path,
    output: Path | None = None,
    split: str = "test",
    prompts: Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, Any]:
    """Zero-shot evaluation on an official test set: macro AUROC and head/medium/tail AUROC.

    Args:
        dataset: one of chestxray14, chexpert, padchest, openi, chestxdet10 (released layouts; see README).
        root: the dataset folder.
        ckpt: checkpoint written by `carzero fit`.
        output: JSON file for the results (default: evaluate_<dataset>.json next to the checkpoint).
        split: chestxray14 only: "test" (official test_list.txt) or "all".
        prompts: YAML overriding the shipped per-class prompts.
        batch_size: images per forward pass.
        device: torch device.

    Head = classes with more positives than the 65th percentile of the test set's positive counts;
    tail = classes with at most 10 positives; medium = the rest.
    """
    from medzoo.io import write_json

    kwargs = {"split": split} if dataset == "chestxray14" else {}
    test = load_test_set(dataset, root, **kwargs)
    module = load_module(ckpt, device)
    if prompts is not None:
        module.prompts_path = str(prompts)
    images = LabelledImageDataset(test.image_paths, test.labels, _transform(module))
    scores = _score(module, images, test.class_names, batch_size, device)
    groups = frequency_groups(test.positives())
    result: dict[str, Any] = {
        "dataset": dataset,
        "n_images": len(images),
        **zero_shot_metrics(test.labels, scores),
        "groups": {g: [test.class_names[i] for i in idx] for g, idx in groups.items()},
        "positives": dict(zip(test.class_names, test.positives().tolist(), strict=True)),
    }
    # JSON has no NaN: an undefined AUROC (e.g. an empty tail group) is written as null.
    result = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in result.items()}
    path = write_json(Path(output) if output else Path(ckpt).parent / f"evaluate_{dataset}.json", result)
    summary = ", ".join(f"{k} {result[k]:.4f}" if result[k] is not None else f"{k} n/a"
                        for k in ("auc", "auc_head", "auc_medium", "auc_tail"))  # fmt: skip
    print(f"{dataset}: {len(images)} images, {len(test.class_names)} classes: {summary} -> {path}")
    return result


def align_reports(
    input: Path,
    output: Path,
    report_column: str = "report",
    output_column: str = "aligned_report",
    model: str | None = None,
    template: Path | None = None,
    max_new_tokens: int = 128,
    device: str = "cpu",
) -> Path:
    """Rewrite free-text reports into CARZero's standard form (LLM or rule-based) and write a CSV.

    Args:
        input: CSV with a report column (e.g. MIMIC-CXR impressions).
        output: the same CSV with the standardised text added as --output_column.
        report_column: column holding the free text.
        output_column: column to write.
        model: folder or hub id of a Hugging Face causal LM; omit for the deterministic rule-based rewrite.
        template: LLM prompt template with a {report} slot (default: the shipped align_report.txt).
        max_new_tokens: generation budget per report.
        device: torch device for the LLM.
    """
    from carzero.alignment import LLMReportAligner, load_align_template, rule_based_align
    from medzoo.io import write_csv

    input = Path(input)
    if not input.is_file():
        raise MedzooDataError(input, "no such file", "a CSV of reports")
    table = pd.read_csv(input)
    if report_column not in table:
        raise MedzooDataError(input, f"columns {list(table.columns)}", f"a {report_column!r} column")
    reports = table[report_column].tolist()
    for row, text in enumerate(reports):
        if not isinstance(text, str) or not text.strip():
            raise MedzooDataError(f"{input} (row {row}, column {report_column})", "an empty report",
                                  "non-empty report text in every row")  # fmt: skip
    if model is None:
        aligned = [rule_based_align(text) for text in reports]
    else:
        aligner = LLMReportAligner(model, load_align_template(template), max_new_tokens, device=device)
        aligned = aligner(reports)
    table[output_column] = aligned
    return write_csv(output, table)


EXTRA_COMMANDS = {"zeroshot": zeroshot, "evaluate": evaluate, "align-reports": align_reports}


def main(args: list[str] | None = None):
    """Entry point of the `carzero` console script."""
    return cli(CARZeroModule, CARZeroDataModule, package="carzero", args=args, commands=EXTRA_COMMANDS)


if __name__ == "__main__":
    main()

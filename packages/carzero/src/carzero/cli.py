"""``carzero`` command line: Lightning's fit/validate/test/predict plus zeroshot, evaluate and align-reports.

Examples::

    carzero fit --config demo                              # synthetic CXRs + reports, CPU, offline
    carzero predict --config demo --ckpt_path last --data.predict_root my_xrays/
    carzero zeroshot --predict_root my_xrays/ --findings Effusion,Pneumothorax --ckpt_path last
    carzero evaluate --dataset chestxray14 --root /data/nih --ckpt_path last
    carzero align-reports --input reports.csv --output reports_aligned.csv

``predict`` writes one JSON per image and ``summary.csv`` into ``<trainer.default_root_dir>/predictions/``;
``zeroshot`` writes the same files into ``--output_dir`` (default ``predictions``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from carzero.data import CARZeroDataModule, ImageFolderDataset, LabelledImageDataset, build_transform
from carzero.module import CARZeroModule, frequency_groups, zero_shot_metrics
from carzero.testsets import load_test_set
from carzero.writers import ZeroShotScoreWriter
from medzoo.errors import MedzooDataError
from medzoo.lightning import cli, resolve_ckpt_path

DEMO_ROOT = Path("runs/carzero-demo")  # trainer.default_root_dir of configs/demo.yaml


def load_module(ckpt: Path, device: str = "cpu", text_model: str | None = None) -> CARZeroModule:
    """Rebuild a `CARZeroModule` from a Lightning checkpoint (read with ``weights_only=True``).

    Args:
        ckpt: a checkpoint written by `carzero fit`.
        device: torch device of the returned module (in eval mode).
        text_model: text-encoder folder or hub id replacing the one recorded in the checkpoint (same
            architecture; its weights are then overwritten by the checkpoint's).
    """
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
    if "variant" not in hparams:
        raise MedzooDataError(
            ckpt, "a checkpoint without `variant` (carzero < 0.2)", "a checkpoint of carzero 0.2 `fit`"
        )
    # The checkpoint holds every weight: do not read the ViT initialisation again.
    overrides = {**dict(hparams.get("overrides") or {}), "vit_weights": None}
    if text_model is not None:
        overrides["text_model"] = text_model
    module = CARZeroModule(**{**hparams, "overrides": overrides})
    module.load_state_dict(raw["state_dict"])
    return module.to(device).eval()


def _transform(module: CARZeroModule) -> Callable:
    # The paper resizes to 256 for a 224 crop; keep that ratio for other input sizes.
    return build_transform(False, resize=round(module.img_size * 256 / 224), crop=module.img_size)


def _score(
    module: CARZeroModule, dataset: Dataset, class_names: Sequence[str], batch_size: int, device: str
) -> np.ndarray:
    """(N, C) zero-shot scores of every image of `dataset` (in order) against `class_names`."""
    module.encode_prompts(class_names)  # computed once, reused for every batch
    scores = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        scores.append(module.zero_shot(batch["image"].to(device), class_names).float().cpu())
    return torch.cat(scores).numpy()


def zeroshot(
    predict_root: Path,
    findings: list[str],
    ckpt_path: str = "last",
    output_dir: Path = Path("predictions"),
    root_dir: Path = DEMO_ROOT,
    prompts: Path | None = None,
    text_model: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> Path:
    """Score chest X-rays against any list of findings (zero-shot); write one JSON per image + summary.csv.

    Args:
        predict_root: an image file or a folder of chest X-rays (PNG, JPEG, DICOM, ...; searched recursively).
        findings: finding names, e.g. "Pneumonia,Effusion"; each is scored through its class prompts
            (see --prompts).
        ckpt_path: checkpoint written by `carzero fit`, or `last` for <root_dir>/checkpoints/last.ckpt.
        output_dir: folder written atomically: `<image>.json` ({"image", "scores": {finding: score}}) per
            image (its path relative to --predict_root) and `summary.csv` (image, then one column per
            finding). A score is the raw zero-shot logit (S_i2t + S_t2i^T)/2; higher = more likely.
        root_dir: the run folder that `--ckpt_path last` refers to (the config's trainer.default_root_dir).
        prompts: YAML overriding the shipped per-class prompts
            ({default: "there is {finding}", classes: {name: prompt}}).
        text_model: text-encoder folder to use instead of the one recorded in the checkpoint.
        batch_size: images per forward pass.
        device: torch device, e.g. "cpu" or "cuda".

    Returns:
        The path of `summary.csv`.
    """
    findings = [f.strip() for f in findings if f.strip()]
    if not findings:
        raise MedzooDataError(
            "--findings", "no finding names", "a comma-separated list such as 'Pneumonia,Effusion'"
        )
    inputs = CARZeroDataModule(predict_root=predict_root)
    files = inputs.predict_files()
    module = load_module(resolve_ckpt_path(ckpt_path, root_dir), device, text_model)
    if prompts is not None:
        module.prompts_path = str(prompts)
    folder = Path(predict_root) if Path(predict_root).is_dir() else None
    dataset = ImageFolderDataset(files, _transform(module), root=folder)
    scores = _score(module, dataset, findings, batch_size, device)
    writer = ZeroShotScoreWriter(output_dir)
    output_dir = Path(output_dir)
    names = [dataset.name(i) for i in range(len(dataset))]
    prediction = {"name": names, "path": [str(p) for p in files], "scores": scores, "class_names": findings}
    rows = writer.write_batch(prediction, None, output_dir)
    path = writer.write_summary(rows, output_dir)
    print(f"wrote {len(rows)} images x {len(findings)} findings to {output_dir}/")
    return path


def evaluate(
    dataset: str,
    root: Path,
    ckpt_path: str = "last",
    output_dir: Path | None = None,
    root_dir: Path = DEMO_ROOT,
    split: str | None = None,
    prompts: Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, Any]:
    """Zero-shot evaluation on an official test set: macro AUROC and head/medium/tail AUROC.

    Args:
        dataset: one of chestxray14, chexpert, padchest, openi, chestxdet10 (released layouts; see README).
        root: the dataset folder.
        ckpt_path: checkpoint written by `carzero fit`, or `last` for <root_dir>/checkpoints/last.ckpt.
        output_dir: folder for `evaluate_<dataset>.json` (written atomically; default: the checkpoint's
            folder).
        root_dir: the run folder that `--ckpt_path last` refers to (the config's trainer.default_root_dir).
        split: chestxray14 only: "test" (official test_list.txt, the default) or "all".
        prompts: YAML overriding the shipped per-class prompts.
        batch_size: images per forward pass.
        device: torch device.

    Head = classes with more positives than the 65th percentile of the test set's positive counts;
    tail = classes with at most 10 positives; medium = the rest.
    """
    from medzoo.io import write_json

    test = load_test_set(dataset, root, **({} if split is None else {"split": split}))
    ckpt = resolve_ckpt_path(ckpt_path, root_dir)
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
    folder = Path(output_dir) if output_dir is not None else ckpt.parent
    path = write_json(folder / f"evaluate_{dataset}.json", result)
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
    from medzoo.io import read_text_column, write_csv

    table, reports = read_text_column(input, report_column)
    if model is None:
        aligned = [rule_based_align(text) for text in reports]
    else:
        aligner = LLMReportAligner(model, load_align_template(template), max_new_tokens, device=device)
        aligned = aligner(reports)
    table[output_column] = aligned
    return write_csv(output, table)


# The verbs beyond Lightning's fit/validate/test/predict; `carzero --help` lists them.
COMMANDS: dict[str, Callable[..., Any]] = {
    "zeroshot": zeroshot,
    "evaluate": evaluate,
    "align-reports": align_reports,
}


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the `carzero` console script."""
    return cli(CARZeroModule, CARZeroDataModule, package="carzero", args=args, commands=COMMANDS)


if __name__ == "__main__":
    main()

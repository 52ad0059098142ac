"""``carzero`` command line: Lightning's fit/validate/test/predict plus zeroshot, evaluate and align-reports.

Examples::

    carzero fit --config demo                              # synthetic CXRs + reports, CPU, offline
    carzero predict --config demo --ckpt_path best --data.predict_root my_xrays/
    carzero zeroshot --predict_root my_xrays/ --findings Effusion,Pneumothorax --ckpt_path best
    carzero evaluate --dataset chestxray14 --root /data/nih --ckpt_path best
    carzero align-reports --input reports.csv --output reports_aligned.csv

``predict`` writes one JSON per image and ``summary.csv`` into ``<trainer.default_root_dir>/predictions/``;
``zeroshot`` writes the same files into ``--output_dir`` (default ``predictions``).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from carzero.data import (
    CARZeroDataModule,
    ImageFolderDataset,
    LabelledImageDataset,
    build_transform,
    read_cxr,
)
from carzero.module import (
    MIN_SCORED_CLASSES,
    CARZeroModule,
    MAEPretrainModule,
    frequency_groups,
    per_class_auroc,
    zero_shot_metrics,
)
from carzero.testsets import load_test_set
from carzero.writers import ZeroShotScoreWriter
from medzoo.errors import MedzooDataError
from medzoo.lightning import Stage, cli, resolve_ckpt_path

PRETRAIN_VERBS = ("fit", "validate", "test", "predict", "-h", "--help", "--print_config")
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
    module = CARZeroModule(**{**hparams, "overrides": overrides, "vit_weights": None})
    module.load_state_dict(raw["state_dict"])
    return module.to(device).eval()


def _transform(module: CARZeroModule) -> Callable:
    # The paper resizes to 256 for a 224 crop; keep that ratio for other input sizes.
    return build_transform(False, resize=round(module.img_size * 256 / 224), crop=module.img_size)


# --precision: Lightning's names (and short forms) -> the autocast dtype (None = plain fp32).
PRECISIONS: dict[str, torch.dtype | None] = {
    "32": None,
    "32-true": None,
    "bf16": torch.bfloat16,
    "bf16-mixed": torch.bfloat16,
    "16": torch.float16,
    "16-mixed": torch.float16,
}


def precision_context(precision: str, device: str) -> contextlib.AbstractContextManager:
    """Autocast for `precision` on `device`: bf16 on CPU; fp16 or bf16 on CUDA; "32" = no autocast."""
    if precision not in PRECISIONS:
        raise MedzooDataError("--precision", repr(precision), f"one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if device_type == "cpu" and dtype == torch.float16:
        raise MedzooDataError("--precision", f"{precision!r} on a CPU", "bf16 on a CPU (16 needs CUDA)")
    return torch.autocast(device_type=device_type, dtype=dtype)


def _score(
    module: CARZeroModule,
    dataset: Dataset,
    class_names: Sequence[str],
    batch_size: int,
    device: str,
    precision: str = "32",
    on_batch: Callable[[dict[str, Any], torch.Tensor, torch.Tensor], None] | None = None,
) -> np.ndarray:
    """(N, C) zero-shot scores of every image of `dataset` (in order) against `class_names`.

    `on_batch(batch, scores, maps)` (optional) receives each batch with its (B, C) scores and (B, C, g, g)
    attention maps.
    """
    scores = []
    with precision_context(precision, device):
        module.encode_prompts(class_names)  # computed once, reused for every batch
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images = batch["image"].to(device)
            if on_batch is None:
                scores.append(module.zero_shot(images, class_names).float().cpu())
                continue
            batch_scores, maps = module.zero_shot(images, class_names, return_attention=True)
            scores.append(batch_scores.float().cpu())
            on_batch(batch, scores[-1], maps.float().cpu())
    return torch.cat(scores).numpy()


def write_attention_overlays(
    folder: Path,
    batch: dict[str, Any],
    scores: torch.Tensor,
    maps: torch.Tensor,
    findings: Sequence[str],
    top: int = 3,
) -> list[Path]:
    """Heatmap overlays of the `top` highest-scoring findings of each image of a batch.

    Writes ``<folder>/<image name without suffix>/<rank>_<finding>.png``: the network's input view (grey)
    with the finding's image->text cross-attention over the patch grid, upsampled bilinearly and min-max
    scaled per map, blended in red.
    """
    import torch.nn.functional as F

    from carzero.data import NORMALIZE_MEAN, NORMALIZE_STD
    from medzoo.io import write_png

    images = batch["image"][:, 0] * NORMALIZE_STD + NORMALIZE_MEAN  # (B, H, W) in [0, 1]
    size = images.shape[-2:]
    heat = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)  # (B, C, H, W)
    written = []
    for i, name in enumerate(batch["name"]):
        grey = images[i].clamp(0, 1).numpy()
        for rank, c in enumerate(scores[i].argsort(descending=True)[:top].tolist(), start=1):
            h = heat[i, c].numpy()
            h = (h - h.min()) / max(float(h.max() - h.min()), 1e-12)
            alpha = 0.6 * h
            rgb = np.stack([grey * (1 - alpha) + alpha, grey * (1 - alpha), grey * (1 - alpha)], axis=-1)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in findings[c])
            path = folder / Path(name).with_suffix("") / f"{rank}_{safe}.png"
            written.append(write_png(path, (rgb * 255).round().astype(np.uint8)))
    return written


def _readable_images(dataset: ImageFolderDataset, strict: bool) -> tuple[list[int], list[dict[str, str]]]:
    """Indices of the images that load, and {"image", "error"} for those that do not (strict: raise)."""
    good, failures = [], []
    for index, path in enumerate(dataset.image_paths):
        try:
            read_cxr(path)
        except Exception as error:  # corrupt, truncated or unsupported files
            if strict:
                raise MedzooDataError(
                    path, f"an unreadable image ({type(error).__name__}: {error})", "a readable image"
                ) from error
            failures.append({"image": dataset.name(index), "error": f"{type(error).__name__}: {error}"})
        else:
            good.append(index)
    return good, failures


def zeroshot(
    predict_root: Path,
    findings: list[str],
    ckpt_path: str = "best",
    output_dir: Path = Path("predictions"),
    root_dir: Path = DEMO_ROOT,
    prompts: Path | None = None,
    text_model: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    strict: bool = False,
    precision: str = "32",
    attention_maps: Path | None = None,
    top_findings: int = 3,
) -> Path:
    """Score chest X-rays against any list of findings (zero-shot); write one JSON per image + summary.csv.

    Args:
        predict_root: an image file or a folder of chest X-rays (PNG, JPEG, DICOM, ...; searched recursively).
        findings: finding names, e.g. "Pneumonia,Effusion"; each is scored through its class prompts
            (see --prompts).
        ckpt_path: checkpoint written by `carzero fit`, `best` (<root_dir>/checkpoints/best.ckpt, the best
            validation epoch) or `last` (<root_dir>/checkpoints/last.ckpt, the newest).
        output_dir: folder written atomically: `<image>.json` ({"image", "scores": {finding: score}}) per
            image (its path relative to --predict_root) and `summary.csv` (image, then one column per
            finding). A score is the raw zero-shot logit (S_i2t + S_t2i^T)/2; higher = more likely.
            Images that cannot be read are listed in `failures.csv` (image, error) and on stderr.
        root_dir: the run folder that `--ckpt_path best|last` refers to (the config's
            trainer.default_root_dir).
        prompts: YAML overriding the shipped per-class prompts
            ({default: "there is {finding}", classes: {name: prompt}}).
        text_model: text-encoder folder to use instead of the one recorded in the checkpoint.
        batch_size: images per forward pass.
        device: torch device, e.g. "cpu" or "cuda".
        strict: stop with an error at the first unreadable image (default: score every other image).
        precision: "32" (fp32), "bf16" (autocast; CPU or CUDA) or "16" (fp16 autocast; CUDA only).
        attention_maps: a folder for heatmap overlays: for each image, the cross-attention of its
            `top_findings` highest-scoring findings over the image (`write_attention_overlays`).
        top_findings: findings per image with an overlay.

    Returns:
        The path of `summary.csv`.
    """
    from medzoo.io import write_csv

    findings = [f.strip() for f in findings if f.strip()]
    if not findings:
        raise MedzooDataError(
            "--findings", "no finding names", "a comma-separated list such as 'Pneumonia,Effusion'"
        )
    inputs = CARZeroDataModule(predict_root=predict_root)
    files = inputs.predict_files()
    folder = Path(predict_root) if Path(predict_root).is_dir() else None
    everything = ImageFolderDataset(files, None, root=folder)
    good, failures = _readable_images(everything, strict)
    output_dir = Path(output_dir)
    sidecar = output_dir / "failures.csv"
    if failures:
        write_csv(sidecar, pd.DataFrame(failures, columns=["image", "error"]))
        for failure in failures:
            sys.stderr.write(f"carzero zeroshot: skipped {failure['image']}: {failure['error']}\n")
        sys.stderr.write(f"carzero zeroshot: {len(failures)} unreadable image(s) listed in {sidecar}\n")
    elif sidecar.is_file():
        sidecar.unlink()  # a stale list from an earlier run of the same folder
    if not good:
        raise MedzooDataError(predict_root, f"{len(failures)} images, none readable", "readable images")
    module = load_module(resolve_ckpt_path(ckpt_path, root_dir), device, text_model)
    if prompts is not None:
        module.prompts_path = str(prompts)
    dataset = ImageFolderDataset([files[i] for i in good], _transform(module), root=folder)
    on_batch = None
    if attention_maps is not None:

        def on_batch(batch: dict[str, Any], scores: torch.Tensor, maps: torch.Tensor) -> None:
            write_attention_overlays(Path(attention_maps), batch, scores, maps, findings, top_findings)

    scores = _score(module, dataset, findings, batch_size, device, precision, on_batch)
    writer = ZeroShotScoreWriter(output_dir)
    names = [dataset.name(i) for i in range(len(dataset))]
    paths = [str(p) for p in dataset.image_paths]
    prediction = {"name": names, "path": paths, "scores": scores, "class_names": findings}
    rows = writer.write_batch(prediction, None, output_dir)
    path = writer.write_summary(rows, output_dir)
    print(f"wrote {len(rows)} images x {len(findings)} findings to {output_dir}/"
          + (f" ({len(failures)} unreadable, see {sidecar})" if failures else ""))  # fmt: skip
    return path


def evaluate(
    dataset: str,
    root: Path,
    ckpt_path: str = "best",
    output_dir: Path | None = None,
    root_dir: Path = DEMO_ROOT,
    split: str | None = None,
    openi_labels: str = "reference",
    tail: str = "fixed",
    prompts: Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    precision: str = "32",
) -> dict[str, Any]:
    """Zero-shot evaluation on an official test set: macro AUROC and head/medium/tail AUROC.

    Args:
        dataset: one of chestxray14, chexpert, padchest, openi, chestxdet10 (released layouts; see README).
        root: the dataset folder.
        ckpt_path: checkpoint written by `carzero fit`, `best` (<root_dir>/checkpoints/best.ckpt, the best
            validation epoch) or `last` (<root_dir>/checkpoints/last.ckpt, the newest).
        output_dir: folder for `evaluate_<dataset>.json` (written atomically; default: the checkpoint's
            folder).
        root_dir: the run folder that `--ckpt_path best|last` refers to (the config's
            trainer.default_root_dir).
        split: chestxray14 only: "test" (official test_list.txt, the default) or "all".
        openi_labels: openi only: "reference" (the reference's 18 labels from <automatic> terms, substring
            and synonym matching; default) or "mesh_major" (ours, from <major> terms).
        tail: "fixed" (tail = at most 10 positives, the reference) or "adaptive" (lowered to the 65th
            percentile when that is below 10, so the groups stay disjoint).
        prompts: YAML overriding the shipped per-class prompts.
        batch_size: images per forward pass.
        device: torch device.
        precision: "32" (fp32), "bf16" (autocast; CPU or CUDA) or "16" (fp16 autocast; CUDA only).

    Head = classes with more positives than the 65th percentile of the test set's positive counts;
    tail = classes with at most 10 positives; medium = the rest. A class whose test images are all
    positive or all negative cannot be scored: the printout and the JSON (`scored_classes`,
    `skipped_classes`) list them, and with fewer than 2 scored classes no macro AUROC is given (null).
    """
    from medzoo.io import write_json

    options: dict[str, Any] = {} if split is None else {"split": split}
    if dataset == "openi":
        options["labels"] = openi_labels
    test = load_test_set(dataset, root, **options)
    ckpt = resolve_ckpt_path(ckpt_path, root_dir)
    module = load_module(ckpt, device)
    if prompts is not None:
        module.prompts_path = str(prompts)
    images = LabelledImageDataset(test.image_paths, test.labels, _transform(module))
    scores = _score(module, images, test.class_names, batch_size, device, precision)
    per_class = per_class_auroc(test.labels, scores)
    scored = [name for name, value in zip(test.class_names, per_class, strict=True) if np.isfinite(value)]
    skipped = [name for name in test.class_names if name not in scored]
    groups = frequency_groups(test.positives(), tail)
    result: dict[str, Any] = {
        "dataset": dataset,
        "n_images": len(images),
        "n_classes": len(test.class_names),
        "n_scored_classes": len(scored),
        "scored_classes": scored,
        "skipped_classes": skipped,
        "tail_rule": tail,
        "precision": precision,
        **zero_shot_metrics(test.labels, scores, tail),
        "per_class_auc": {
            n: float(v) if np.isfinite(v) else None for n, v in zip(test.class_names, per_class, strict=True)
        },
        "groups": {g: [test.class_names[i] for i in idx] for g, idx in groups.items()},
        "positives": dict(zip(test.class_names, test.positives().tolist(), strict=True)),
    }
    # JSON has no NaN: an undefined AUROC (e.g. an empty tail group) is written as null.
    result = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in result.items()}
    folder = Path(output_dir) if output_dir is not None else ckpt.parent
    path = write_json(folder / f"evaluate_{dataset}.json", result)
    head = f"{dataset}: {len(images)} images, {len(scored)} of {len(test.class_names)} classes scored"
    if len(scored) < MIN_SCORED_CLASSES:
        summary = f"no macro AUROC: fewer than {MIN_SCORED_CLASSES} classes have both positives and negatives"
    else:
        summary = ", ".join(f"{k} {result[k]:.4f}" if result[k] is not None else f"{k} n/a"
                            for k in ("auc", "auc_head", "auc_medium", "auc_tail"))  # fmt: skip
    print(f"{head}: {summary} -> {path}")
    if skipped:
        print(f"  skipped (all positive or all negative in this set): {', '.join(skipped)}")
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
COMMANDS: dict[str, Callable[..., Any] | Stage] = {
    "pretrain": Stage(
        MAEPretrainModule,
        CARZeroDataModule,
        "MAE pre-training of the ViT image encoder (writes vit_weights.safetensors for --model.vit_weights)",
    ),
    "zeroshot": zeroshot,
    "evaluate": evaluate,
    "align-reports": align_reports,
}


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the `carzero` console script.

    ``carzero pretrain --config pretrain_demo`` is short for ``carzero pretrain fit --config pretrain_demo``.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["pretrain"] and (len(argv) == 1 or argv[1] not in PRETRAIN_VERBS):
        argv.insert(1, "fit")
    return cli(
        CARZeroModule,
        CARZeroDataModule,
        package="carzero",
        args=argv,
        commands=COMMANDS,
        catch_errors=args is None,  # a console script prints a MedzooError as one line
    )


if __name__ == "__main__":
    main()

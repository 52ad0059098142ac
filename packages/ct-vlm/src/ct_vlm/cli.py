"""Command line: ``ct-vlm fit|validate|test|predict --config paper|demo`` (instruction tuning),
``ct-vlm pretrain fit|validate --config pretrain_paper|pretrain_demo`` (MAE), ``ct-vlm generate`` and
``ct-vlm evaluate``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ct_vlm.data import REPORT_QUESTION, CTVLMDataModule, ct_transforms
from ct_vlm.metrics import closed_vqa_accuracy, diagnosis_metrics, text_metrics
from ct_vlm.module import CTVLMModule, MAEPretrainModule
from medzoo.errors import MedzooDataError
from medzoo.lightning import Stage, cli, resolve_ckpt_path


def load_checkpoint(
    ckpt_path: str | Path, root_dir: str | Path = ".", language_model: str | None = None, device: str = "cpu"
) -> tuple[CTVLMModule, dict[str, Any]]:
    """Rebuild a :class:`CTVLMModule` from a ``ct-vlm fit`` checkpoint (read with ``weights_only=True``).

    Returns the module (eval mode) and the checkpoint's data settings (empty when absent).
    """
    path = resolve_ckpt_path(ckpt_path, root_dir)
    if not Path(path).is_file():
        raise MedzooDataError(path, "no such file", "a checkpoint written by `ct-vlm fit` (or 'best'/'last')")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise MedzooDataError(path, f"an unreadable checkpoint ({type(error).__name__})",
                              "a checkpoint written by `ct-vlm fit`") from error  # fmt: skip
    if not isinstance(raw, dict) or "state_dict" not in raw or "hyper_parameters" not in raw:
        raise MedzooDataError(path, "no state_dict/hyper_parameters", "a checkpoint written by `ct-vlm fit`")
    accepted = set(inspect.signature(CTVLMModule.__init__).parameters) - {"self", "optimizer", "scheduler"}
    hparams = {k: v for k, v in dict(raw["hyper_parameters"]).items() if k in accepted}
    hparams["vision_weights"] = None  # the checkpoint holds the trained ViT
    if language_model is not None:
        hparams["language_model"] = language_model
    module = CTVLMModule(**hparams)
    module.load_state_dict(raw["state_dict"])
    data = dict(raw.get("datamodule_hyper_parameters") or {})
    return module.to(device).eval(), data


def generate(
    volume: Path,
    prompt: str = REPORT_QUESTION,
    ckpt_path: str = "best",
    root_dir: Path = Path("runs/ct-vlm-demo"),
    max_new_tokens: int | None = None,
    output: Path | None = None,
    language_model: str | None = None,
    device: str = "cpu",
) -> str:
    """Generate a report or an answer for one CT volume and print it.

    Args:
        volume: a CT in Hounsfield units: NIfTI file, DICOM series folder, MHA/NRRD.
        prompt: the question (the model's prompt template adds the <image> placeholder).
        ckpt_path: checkpoint of `ct-vlm fit`, "best" (<root_dir>/checkpoints/best.ckpt, the best validation
            epoch) or "last" (<root_dir>/checkpoints/last.ckpt, the newest).
        root_dir: the training run's folder (for "best" and "last").
        max_new_tokens: generation budget (default: the model's).
        output: optional JSON file ({"volume", "prompt", "answer"}), written atomically.
        language_model: LM folder to use instead of the one recorded in the checkpoint.
        device: torch device.
    """
    from medzoo.io import write_json

    if not prompt.strip():
        raise MedzooDataError("--prompt", "an empty prompt", "a question or instruction")
    module, data = load_checkpoint(ckpt_path, root_dir, language_model, device)
    transform = ct_transforms(
        module.model.vision.img_size, data.get("hu_range", (-1000.0, 1000.0)), data.get("spacing")
    )
    try:
        image = transform({"image": str(volume)})["image"]
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, MedzooDataError):
            cause = cause.__cause__ or cause.__context__
        raise (cause or error) from None
    answer = module.generate_text(image[None].to(device), [prompt], max_new_tokens)[0]
    print(answer)
    if output is not None:
        write_json(output, {"volume": str(volume), "prompt": prompt, "answer": answer})
    return answer


def evaluate(
    ckpt_path: str = "best",
    root_dir: Path = Path("runs/ct-vlm-demo"),
    root: Path | None = None,
    layout: str | None = None,
    split: str = "test",
    output: Path | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    language_model: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Generate for every instruction sample of a split and score it: report BLEU-1..4 and ROUGE-L, open-VQA
    BLEU/ROUGE-L, closed-VQA accuracy of the generated yes/no, diagnosis AUC/F1 from P(yes).

    Args:
        ckpt_path: checkpoint of `ct-vlm fit`, "best" (<root_dir>/checkpoints/best.ckpt, the best validation
            epoch) or "last" (<root_dir>/checkpoints/last.ckpt, the newest).
        root_dir: the training run's folder; results go to <root_dir>/evaluate_<split>.json by default.
        root, layout: the dataset (default: as recorded in the checkpoint; None root = the demo set).
        split: "test" (official held-out), "val" or "train".
        output: JSON of the metrics; a CSV of every generation is written next to it.
        batch_size: volumes per generation batch.
        max_new_tokens: budget for reports and open answers (closed answers get 4).
        language_model: LM folder to use instead of the one recorded in the checkpoint.
        device: torch device.
    """
    import pandas as pd

    from medzoo.io import write_csv, write_json

    module, data = load_checkpoint(ckpt_path, root_dir, language_model, device)
    keys = ("root", "layout", "img_size", "hu_range", "spacing", "tasks", "label_columns", "val_fraction",
            "synthetic_train", "synthetic_test", "seed")  # fmt: skip
    settings = {k: data[k] for k in keys if k in data}
    if root is not None:
        settings["root"] = str(root)
    if layout is not None:
        settings["layout"] = layout
    settings["img_size"] = module.model.vision.img_size
    datamodule = CTVLMDataModule(**settings, batch_size=batch_size)
    datamodule.setup("test")
    if split not in datamodule.datasets or not len(datamodule.datasets[split]):
        raise MedzooDataError(
            "--split", repr(split), f"a non-empty split among {sorted(datamodule.datasets)}"
        )
    rows = []
    for batch in datamodule.eval_loader(datamodule.datasets[split]):
        images = batch["image"].to(device)
        for task, budget in (("report", max_new_tokens), ("open_vqa", max_new_tokens), ("closed_vqa", 4)):
            picked = [i for i, t in enumerate(batch["task"]) if t == task]
            if not picked:
                continue
            questions = [batch["question"][i] for i in picked]
            answers = module.generate_text(images[picked], questions, budget)
            p_yes = (
                module.yes_probability(images[picked], questions).cpu().tolist()
                if task == "closed_vqa"
                else None
            )
            for j, i in enumerate(picked):
                rows.append({"volume": batch["path"][i], "task": task, "question": questions[j],
                             "reference": batch["answer"][i], "generated": answers[j],
                             "finding": batch["finding"][i], "target": int(batch["target"][i]),
                             "p_yes": p_yes[j] if p_yes else float("nan")})  # fmt: skip
    table = pd.DataFrame(rows)
    result: dict[str, Any] = {"split": split, "n_samples": len(table)}
    for task in ("report", "open_vqa"):
        part = table[table.task == task]
        if len(part):
            scores = text_metrics(part.generated.tolist(), part.reference.tolist())
            result.update({f"{task}/{k}": v for k, v in scores.items()})
    closed = table[table.task == "closed_vqa"]
    if len(closed):
        result["closed_vqa/accuracy"] = closed_vqa_accuracy(
            closed.generated.tolist(), closed.reference.tolist()
        )
        names = sorted(set(closed.finding))
        finding = np.array([names.index(f) for f in closed.finding])
        scores = diagnosis_metrics(closed.p_yes.to_numpy(), closed.target.to_numpy(), finding, names)
        result.update({f"diagnosis/{k}": v for k, v in scores.items()})
    result = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in result.items()}
    output = Path(output) if output is not None else Path(root_dir) / f"evaluate_{split}.json"
    write_json(output, result)
    write_csv(output.with_name(output.stem + "_generations.csv"), table)
    print(", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)))
    return result


COMMANDS = {
    "pretrain": Stage(MAEPretrainModule, CTVLMDataModule, "MAE pre-training of the 3D ViT (fit|validate)"),
    "generate": generate,
    "evaluate": evaluate,
}


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``ct-vlm`` console script; returns the LightningCLI or the verb's result."""
    return cli(CTVLMModule, CTVLMDataModule, package="ct_vlm", args=args, commands=COMMANDS)


if __name__ == "__main__":
    main()

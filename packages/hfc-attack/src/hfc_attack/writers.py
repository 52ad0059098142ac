"""Outputs: class probabilities (``predict``); adversarial images and perturbation norms (``attack``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medzoo.io import atomic_write, write_json, write_png
from medzoo.lightning import PredictionWriter

__all__ = ["AdversarialImageWriter", "ClassScoreWriter"]


def _stem(name: str) -> str:
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return str(Path(name).with_suffix(""))


class ClassScoreWriter(PredictionWriter):
    """Per image ``<name>.json`` = ``{"image", "predicted_class", "probabilities": [p_0, ...]}``, and
    ``summary.csv`` with ``image, predicted_class, p0, p1, ...`` (softmax probabilities)."""

    def write_batch(self, prediction: Any, batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        rows = []
        for name, probs in zip(prediction["name"], prediction["probabilities"], strict=True):
            record = {
                "image": name,
                "predicted_class": int(np.argmax(probs)),
                "probabilities": probs.tolist(),
            }
            write_json(output_dir / f"{_stem(name)}.json", record)
            rows.append({"image": name, "predicted_class": record["predicted_class"],
                         **{f"p{k}": float(p) for k, p in enumerate(probs)}})  # fmt: skip
        return rows


class AdversarialImageWriter(PredictionWriter):
    """Per image: ``<name>.png`` (the adversarial image, 8-bit grey or RGB, for viewing; for a volume
    (C, D, H, W) its middle slice along D) and ``<name>.npy`` (the exact float32 (C, H, W) image or
    (C, D, H, W) volume in [0, 1] that detectors read); ``summary.csv`` rows hold ``image,
    label, target, pred_clean, pred_adv, success, linf_256`` (L-inf norm of the perturbation in 1/256 units),
    ``l2`` (L2 norm in [0, 1] pixel units) and ``hfc`` (whether the HFC term was used)."""

    def write_batch(self, prediction: Any, batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        rows = []
        for i, name in enumerate(prediction["name"]):
            adv = prediction["adversarial"][i].astype(np.float32)  # (C, H, W) or (C, D, H, W)
            clean = prediction["clean"][i].astype(np.float32)
            stem = _stem(name)
            shown = adv[:, adv.shape[1] // 2] if adv.ndim == 4 else adv  # a volume's middle slice
            view = np.round(shown.transpose(1, 2, 0) * 255).astype(np.uint8)
            write_png(output_dir / f"{stem}.png", view[..., 0] if view.shape[2] == 1 else view)
            with atomic_write(output_dir / f"{stem}.npy", "wb") as handle:
                np.save(handle, adv, allow_pickle=False)
            delta = adv - clean
            rows.append(
                {
                    "image": f"{stem}.npy",
                    "source": name,
                    "label": int(prediction["label"][i]),
                    "target": int(prediction["target"][i]),
                    "pred_clean": int(prediction["pred_clean"][i]),
                    "pred_adv": int(prediction["pred_adv"][i]),
                    "success": bool(prediction["success"][i]),
                    "linf_256": float(np.abs(delta).max() * 256),
                    "l2": float(np.sqrt((delta.astype(np.float64) ** 2).sum())),
                    "hfc": bool(prediction["hfc"]),
                }
            )
        return rows

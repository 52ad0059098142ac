"""Train the tiny HAN on 8 real Shenzhen chest X-rays and evaluate it on the 3 held-out ones.

Reads ../shared/data/chest-shenzhen (11 PNGs + normalised 6-landmark TXT files, the chest layout), trains
``variant="tiny"`` with left/right flip pairs, and prints the held-out MRE in ORIGINAL pixels next to the
mean-shape baseline (the mean training shape in normalised coordinates, scaled to each test image).
The PNGs carry no pixel spacing, so errors are in pixels (~0.5-0.6 mm/px, unverified).

    python packages/han-landmark/examples/train_shenzhen.py --epochs 120
    python packages/han-landmark/examples/train_shenzhen.py --help
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from han_landmark.data import CHEST_FLIP_PAIRS, LandmarkDataModule
from han_landmark.module import HANLandmarkModule
from medzoo.lightning import WarmupCosineLR
from medzoo.metrics import mean_radial_error, radial_errors

DEFAULT_ROOT = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "chest-shenzhen"


def mean_shape_baseline(datamodule: LandmarkDataModule) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of the mean normalised training shape on the test images, and their targets (pixels)."""
    train, test = datamodule.splits["train"], datamodule.splits["test"]
    sizes = {s.image: datamodule_image_size(s.image) for s in train + test}
    normalised = np.mean([s.coords / sizes[s.image] for s in train], axis=0)
    pred = np.stack([normalised * sizes[s.image] for s in test])
    return pred, np.stack([s.coords for s in test])


def datamodule_image_size(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.size, dtype=np.float64)  # (width, height)


def run(
    data_root: str = str(DEFAULT_ROOT),
    epochs: int = 120,
    input_size: tuple[int, int] = (256, 256),
    lr: float = 2e-3,
    batch_size: int = 4,
    seed: int = 0,
    output_json: str | None = None,
) -> dict:
    """Train on 8 images, test on 3; return and print MRE (pixels) of HAN and of the mean shape.

    Args:
        data_root: the chest-shenzhen folder (images/ + landmarks_all279/).
        epochs: training epochs (2 steps each).
        input_size: network input (H, W).
        lr: AdamW learning rate (warm-up 5 epochs, cosine to 0).
        batch_size: images per step.
        seed: seed of the split, the initialisation and the augmentation.
        output_json: also write the figures there.
    """
    pl.seed_everything(seed, workers=True)
    datamodule = LandmarkDataModule(
        root=data_root, layout="normalized_txt", num_landmarks=6, input_size=input_size,
        val_fraction=0.0, test_fraction=3 / 11, flip_pairs=list(CHEST_FLIP_PAIRS), rotation_deg=10.0,
        rotation_prob=0.5, scale_factor=0.1, translation=0.05, batch_size=batch_size, seed=seed,
        keep_aspect=False, padding=1.0, scale_rotation="uniform",  # the settings the README's figure used
    )  # fmt: skip
    datamodule.setup("fit")
    assert [len(datamodule.splits[s]) for s in ("train", "test")] == [8, 3]
    model = HANLandmarkModule(
        num_landmarks=6,
        variant="tiny",
        overrides={"init": "kaiming"},  # a short run from scratch, as the demo
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
        scheduler=lambda opt: WarmupCosineLR(
            opt, warmup_steps=min(5, epochs), total_steps=epochs, warmup_start_factor=0.1
        ),
    )
    # No validation split with 11 images: the last epoch is evaluated, nothing is selected on the test images.
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule)
    train_seconds = time.perf_counter() - start
    trainer.test(model, datamodule, verbose=False)
    han_errors = model.test_results["errors"]
    baseline_pred, baseline_target = mean_shape_baseline(datamodule)
    baseline_errors = radial_errors(baseline_pred, baseline_target)
    result = {
        "test_images": [s.image.name for s in datamodule.splits["test"]],
        "epochs": epochs,
        "input_size": list(input_size),
        "train_seconds": round(train_seconds, 1),
        "han_tiny_mre_px": mean_radial_error(han_errors),
        "mean_shape_mre_px": mean_radial_error(baseline_errors),
    }
    print(f"held-out images: {', '.join(result['test_images'])}")
    print(f"HAN (tiny, {epochs} epochs, {input_size[0]}x{input_size[1]}): MRE = "
          f"{result['han_tiny_mre_px'][0]:.1f} +- {result['han_tiny_mre_px'][1]:.1f} px")  # fmt: skip
    print(f"mean-shape baseline:             MRE = "
          f"{result['mean_shape_mre_px'][0]:.1f} +- {result['mean_shape_mre_px'][1]:.1f} px")  # fmt: skip
    print(f"training time: {train_seconds:.0f} s on {torch.get_num_threads()} CPU threads")
    if output_json:
        Path(output_json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from jsonargparse import auto_cli

    auto_cli(run, as_positional=False)

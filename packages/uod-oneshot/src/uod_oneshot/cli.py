"""The UOD pipeline on one command line (LightningCLI with medzoo's defaults).

Examples (the demo: two generated phantom domains, one template each; a CPU)::

    uod-oneshot ssl fit --config ssl_demo                      # stage 1: self-supervised embeddings
    uod-oneshot pick-template --ckpt_path best                  # (optional) the most representative images
    uod-oneshot pseudo-label --ckpt_path best                   # one-shot pseudo-labels + their report
    uod-oneshot fit --config demo                               # stage 2: DATR on the pseudo-labels
    uod-oneshot test --config demo --ckpt_path best             # MRE / SDR per domain on the test split
    uod-oneshot predict --config demo --ckpt_path best --data.predict_root xrays/ --data.predict_domain a

``--ckpt_path best`` is ``<trainer.default_root_dir>/checkpoints/best.ckpt``, the best validation epoch;
``last.ckpt`` is the newest state, which ``fit --ckpt_path last`` (or ``ssl fit --ckpt_path last``) resumes.

``predict`` writes per-image CSV/JSON/overlay PNGs and ``summary.csv`` into
``<trainer.default_root_dir>/predictions/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medzoo.lightning import Stage, cli, resolve_ckpt_path
from uod_oneshot.data import UODDataModule, UODSSLDataModule
from uod_oneshot.module import DATRModule, UODSSLModule

SSL_DEMO_ROOT = "runs/uod-oneshot-ssl-demo"


def _load_stage1(
    ckpt_path: str, root_dir: str, accelerator: str
) -> tuple[UODSSLModule, UODSSLDataModule, Path]:
    path = resolve_ckpt_path(ckpt_path, root_dir)
    device = torch.device(
        "cuda" if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()) else "cpu"
    )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    module = UODSSLModule.load_from_checkpoint(path, map_location="cpu", weights_only=True).to(device)
    settings = checkpoint.get("datamodule_hyper_parameters", {})
    datamodule = UODSSLDataModule(**{k: v for k, v in settings.items() if not k.startswith("_")})
    datamodule.prepare_data()
    return module, datamodule, path


def pseudo_label(
    ckpt_path: str = "best",
    root_dir: str = SSL_DEMO_ROOT,
    output_dir: str | None = None,
    batch_size: int = 4,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Pseudo-label every unlabelled training image from each domain's template with a stage-1 model.

    Args:
        ckpt_path: a stage-1 checkpoint (``uod-oneshot ssl fit``), ``best``
            (``<root_dir>/checkpoints/best.ckpt``, the best validation epoch) or ``last``
            (``<root_dir>/checkpoints/last.ckpt``, the newest). Its data settings (domains, templates) are
            reused.
        root_dir: the stage-1 run folder (``trainer.default_root_dir`` of ``ssl fit``).
        output_dir: where ``<domain>.csv`` and ``summary.json`` go (default ``<root_dir>/pseudo_labels``).
        batch_size: images per forward pass.
        accelerator: ``cpu``, ``gpu`` or ``auto``.
    """
    from uod_oneshot.pseudo import pseudo_label_domains

    module, datamodule, _ = _load_stage1(ckpt_path, root_dir, accelerator)
    summary = pseudo_label_domains(
        module, datamodule, Path(output_dir or Path(root_dir) / "pseudo_labels"), batch_size
    )
    for name, report in summary.items():
        line = f"{name}: template {Path(report['template']).name}, {report['images']} images"
        if "pseudo" in report:
            pseudo, mean_shape = report["pseudo"]["mre"], report["mean_shape"]["mre"]
            line += f", pseudo-label MRE {pseudo:.3f}, mean-shape MRE {mean_shape:.3f}"
        if "test" in report:
            line += f", stage-1 MRE on the test split {report['test']['mre']:.3f}"
        print(line)
    return summary


def pick_template(
    ckpt_path: str = "best", root_dir: str = SSL_DEMO_ROOT, batch_size: int = 4, accelerator: str = "auto"
) -> dict[str, Any]:
    """Suggest each domain's most representative training image as its template (to annotate).

    Args:
        ckpt_path: a stage-1 checkpoint, ``best`` (``<root_dir>/checkpoints/best.ckpt``, the best validation
            epoch) or ``last`` (``<root_dir>/checkpoints/last.ckpt``, the newest).
        root_dir: the stage-1 run folder.
        batch_size: images per forward pass.
        accelerator: ``cpu``, ``gpu`` or ``auto``.
    """
    from uod_oneshot.pseudo import pick_templates

    module, datamodule, _ = _load_stage1(ckpt_path, root_dir, accelerator)
    choice = pick_templates(module, datamodule, batch_size)
    for name, result in choice.items():
        print(
            f"{name}: {result['template']} (mean cosine distance {result['mean_distance']:.4f} "
            f"to {result['candidates'] - 1} others)"
        )
    return choice


COMMANDS = {
    "ssl": Stage(
        UODSSLModule, UODSSLDataModule, "stage 1: self-supervised domain-adaptive embeddings (fit|validate)"
    ),
    "pseudo-label": pseudo_label,
    "pick-template": pick_template,
}


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``uod-oneshot`` console script (tests pass ``args``)."""
    return cli(DATRModule, UODDataModule, package="uod_oneshot", args=args, commands=COMMANDS)


if __name__ == "__main__":
    main()

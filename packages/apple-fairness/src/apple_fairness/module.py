"""The two Lightning stages: a baseline segmentor (``train-segmentor``) and APPLE on its frozen latent.

APPLE (Xu et al., MICCAI 2024) alternates, per batch (FAAP, Wang et al. CVPR 2022):

1. discriminator step: ``L_D = CE(D_p(z'), a)`` with ``z' = z + G_p(z)`` detached (lr = ``disc_lr_ratio``
   x the perturber's);
2. perturber step: ``L_G = -beta CE(D_p(z'), a) - gamma H(D_p(z')) + seg_weight (Dice + CE)(D(z'), y)``.

The segmentor ``D(E(.))`` is frozen: no gradient, eval mode (batch-norm statistics fixed), and its state
dict is hashed at the start and the end of every fit; a change stops the run with an error.

A second discriminator, the *probe*, is trained the same way on the clean latent ``z``; its accuracy is the
attribute leakage "before" APPLE, ``D_p``'s on ``z'`` the leakage "after" (both in the fairness report).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from apple_fairness.losses import discriminator_loss, perturber_loss, segmentation_loss
from apple_fairness.models import APPLE, AttributeDiscriminator, Segmentor, create_model, create_segmentor
from apple_fairness.report import fairness_summary, group_metric_summary, write_fairness_report
from apple_fairness.writers import MaskWriter
from medzoo.errors import MedzooDataError, MedzooTrainingError
from medzoo.lightning import GatherAccumulator, MedzooModule
from medzoo.metrics import dice, iou

__all__ = ["APPLEModule", "SegmentorModule", "load_segmentor_state", "state_fingerprint"]


def state_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and exact bytes of every tensor)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def load_segmentor_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A segmentor state dict from a ``train-segmentor`` checkpoint (``.ckpt``, read with
    ``weights_only=True``), an APPLE checkpoint, or a safetensors/torch file of the segmentor itself."""
    from medzoo.errors import MedzooWeightsError
    from medzoo.weights import load_weights

    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(
            path, "no such file", "a segmentor checkpoint (train-segmentor .ckpt or safetensors)"
        )
    try:
        state = load_weights(path)
    except MedzooWeightsError as error:
        raise MedzooDataError(
            path, f"an unreadable weights file ({error})", "a segmentor checkpoint"
        ) from error
    for prefix in ("model.segmentor.", "model."):
        if any(k.startswith(prefix) for k in state):
            return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def _no_closure() -> None:
    return None


def _parameter_sum(module: torch.nn.Module) -> torch.Tensor:
    return sum(p.sum() for p in module.parameters() if p.requires_grad)


def _per_sample_scores(
    logits: torch.Tensor, mask: torch.Tensor, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU, averaged over the foreground classes: (N,) each."""
    pred = logits.argmax(dim=1).cpu()
    target = mask.cpu()
    d = dice(pred, target, num_classes=num_classes)
    j = iou(pred, target, num_classes=num_classes)
    return np.nanmean(d, axis=1), np.nanmean(j, axis=1)


def _predict_masks(logits: torch.Tensor, batch: dict[str, Any], num_classes: int) -> dict[str, Any]:
    masks = []
    for i in range(len(logits)):
        size = tuple(int(s) for s in batch["original_size"][i])
        resized = F.interpolate(logits[i : i + 1].float(), size=size, mode="bilinear", align_corners=False)
        masks.append(resized.argmax(dim=1)[0].cpu().numpy().astype(np.uint8))
    return {"path": list(batch["path"]), "masks": masks, "num_classes": [num_classes] * len(masks)}


class _FairnessReportMixin:
    """Gathers per-sample test outputs (DDP-correct) and writes the fairness report on rank 0."""

    report_dir: str | None

    def _group_names(self) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None)
        names = list(getattr(datamodule, "group_names", []) or [])
        return names or [str(g) for g in range(self.num_groups)]

    def _check_groups(self, groups: torch.Tensor) -> None:
        if int(groups.max()) >= self.num_groups or int(groups.min()) < 0:
            raise MedzooDataError(
                "batch['group']",
                f"group indices up to {int(groups.max())}",
                f"indices in [0, {self.num_groups}) (set --model.num_groups / the variant's num_groups)",
            )

    def _finish_report(self, outputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        values = {k: v.cpu().numpy() for k, v in outputs.items()}
        report = fairness_summary(values, self._group_names(), self.num_groups)
        for model in ("baseline", "apple"):
            if model in report:
                for metric in ("dice", "iou"):
                    summary = report[model][metric]
                    for key in ("overall", "gap", "es_sum", "es_std"):
                        self.log(f"test/{model}_{metric}_{key}", summary[key], sync_dist=False)
        for where, numbers in report.get("attribute_leakage", {}).items():
            self.log(f"test/leakage_{where}_balanced_accuracy", numbers["balanced_accuracy"], sync_dist=False)
        if self.trainer.is_global_zero:
            folder = Path(self.report_dir or Path(self.trainer.default_root_dir) / "fairness")
            per_sample = pd.DataFrame({k: v for k, v in values.items() if v.ndim == 1})
            write_fairness_report(folder, report, per_sample)
        self.last_report = report
        return report


class SegmentorModule(_FairnessReportMixin, MedzooModule):
    """Stage 1 (``apple-fairness train-segmentor``): trains the baseline segmentor with Dice + CE.

    Its checkpoint is what ``apple-fairness fit --model.segmentor_ckpt`` freezes. ``test`` writes the
    baseline's fairness report (no discriminator) to ``<default_root_dir>/fairness/``.

    Args:
        variant: a name of ``MODEL_CONFIGS`` (its ``segmentor`` and ``segmentor_args`` are used).
        overrides: segmentor arguments replacing the variant's, e.g. ``{"channels": [8, 16, 32]}``.
        num_groups: number of attribute groups (only for the report's checks).
        dice_weight, ce_weight: weights of the Dice and cross-entropy terms.
        mask_format: ``predict`` output format (``png``, ``nifti``, ``both``).
        report_dir: where ``test`` writes the report; default ``<default_root_dir>/fairness``.
        optimizer, scheduler, scheduler_interval: see :class:`~medzoo.lightning.MedzooModule`.
    """

    monitor = "val/dice"
    monitor_mode = "max"

    def __init__(
        self,
        variant: str = "tiny",
        overrides: dict[str, Any] | None = None,
        num_groups: int = 2,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        mask_format: str = "png",
        report_dir: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        self.model: Segmentor = create_segmentor(variant, **(overrides or {}))
        self.num_groups = int(num_groups)
        self.num_classes = self.model.num_classes
        self.dice_weight, self.ce_weight = float(dice_weight), float(ce_weight)
        self.mask_format, self.report_dir = mask_format, report_dir
        self.val_outputs = GatherAccumulator("dice_baseline", "group")
        self.test_outputs = GatherAccumulator("dice_baseline", "iou_baseline", "group")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = segmentation_loss(self.model(batch["image"]), batch["mask"], self.dice_weight, self.ce_weight)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        d, _ = _per_sample_scores(self.model(batch["image"]), batch["mask"], self.num_classes)
        self.val_outputs.update(
            index=batch["index"], dice_baseline=torch.as_tensor(d, device=self.device), group=batch["group"]
        )

    def on_validation_epoch_end(self) -> None:
        values = self.val_outputs.compute()
        self.val_outputs.reset()
        if len(values["dice_baseline"]):
            self.log("val/dice", float(values["dice_baseline"].mean()), prog_bar=True)
            summary = group_metric_summary(
                values["dice_baseline"].cpu().numpy(), values["group"].cpu().numpy(), self._group_names()
            )
            self.log("val/dice_gap", summary["gap"])

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._check_groups(batch["group"])
        d, j = _per_sample_scores(self.model(batch["image"]), batch["mask"], self.num_classes)
        self.test_outputs.update(
            index=batch["index"],
            dice_baseline=torch.as_tensor(d, device=self.device),
            iou_baseline=torch.as_tensor(j, device=self.device),
            group=batch["group"],
        )

    def on_test_epoch_end(self) -> None:
        values = self.test_outputs.compute()
        self.test_outputs.reset()
        self._finish_report(values)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return _predict_masks(self.model(batch["image"]), batch, self.num_classes)

    def prediction_writer(self) -> MaskWriter:
        return MaskWriter(self.mask_format)


class APPLEModule(_FairnessReportMixin, MedzooModule):
    """Stage 2 (``apple-fairness fit``): trains APPLE's perturber and discriminator on a frozen segmentor.

    Args:
        variant: a name of ``MODEL_CONFIGS`` (segmentor + perturber + discriminator settings).
        overrides: settings replacing the variant's (``segmentor_args`` is merged), e.g.
            ``{"delta_bound": 0.5, "perturb_skips": true}``.
        segmentor_ckpt: the deployed segmentor's weights (a ``train-segmentor`` checkpoint or a safetensors
            file); ``None`` leaves it randomly initialised (only meaningful when a full APPLE checkpoint is
            loaded afterwards, e.g. ``test --ckpt_path``).
        beta: weight of the adversarial CE term in ``L_G`` (FAAP: 0.4).
        gamma: weight of the entropy term in ``L_G`` (FAAP: 0.1).
        seg_weight: weight of the segmentation term in ``L_G`` (FAAP's task weight: 0.7).
        disc_lr_ratio: discriminator lr / perturber lr (FAAP: 0.2).
        probe_epochs: at ``test``, train two fresh discriminators for this many epochs on the frozen
            training-split latents, one on ``z`` and one on ``z'`` (0 = skip), and report their test
            accuracy: whether the attribute can still be read from ``z'`` by anyone, not only by ``D_p``.
        probe_lr: Adam learning rate of those fresh discriminators.
        train_missing_segmentor: when ``segmentor_ckpt`` names a file that does not exist yet, ``fit`` first
            trains the baseline segmentor exactly as ``train-segmentor fit`` would (``SegmentorModule``,
            Dice + CE, AdamW ``segmentor_lr``, ``segmentor_epochs`` epochs, on the same data), writes its
            final epoch's weights to ``segmentor_ckpt`` (the demo's ``.../checkpoints/best.ckpt``, where
            ``train-segmentor test --ckpt_path best`` then finds it) and freezes it; APPLE then trains on
            it. Off by default (``paper``): a deployed segmentor is the input of APPLE, not its product. On
            in ``demo``, so that ``fit --config demo`` runs alone on a fresh machine. Single-process only.
        segmentor_epochs, segmentor_lr: that baseline training's length and learning rate.
        mask_format: ``predict`` output format (``png``, ``nifti``, ``both``).
        report_dir: where ``test`` writes the report; default ``<default_root_dir>/fairness``.
        optimizer, scheduler, scheduler_interval: see :class:`~medzoo.lightning.MedzooModule`; one optimizer
            is built for ``G_p`` and one for ``D_p`` and the probe (lr x ``disc_lr_ratio``).
    """

    # Equity-scaled Dice (FairSeg's definition) on validation: utility and fairness in one number.
    monitor = "val/es_dice"
    monitor_mode = "max"

    def __init__(
        self,
        variant: str = "tiny",
        overrides: dict[str, Any] | None = None,
        segmentor_ckpt: str | None = None,
        beta: float = 0.4,
        gamma: float = 0.1,
        seg_weight: float = 0.7,
        disc_lr_ratio: float = 0.2,
        probe_epochs: int = 20,
        probe_lr: float = 1e-3,
        train_missing_segmentor: bool = False,
        segmentor_epochs: int = 30,
        segmentor_lr: float = 3e-3,
        mask_format: str = "png",
        report_dir: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        self.automatic_optimization = False
        self.probe_epochs, self.probe_lr = int(probe_epochs), float(probe_lr)
        self.variant, self.overrides = variant, dict(overrides or {})
        self.segmentor_ckpt = None if segmentor_ckpt is None else str(segmentor_ckpt)
        self.train_missing_segmentor = bool(train_missing_segmentor)
        self.segmentor_epochs, self.segmentor_lr = int(segmentor_epochs), float(segmentor_lr)
        self._retrained: dict[str, AttributeDiscriminator] = {}
        self.model: APPLE = create_model(variant, **(overrides or {}))
        missing = segmentor_ckpt is not None and not Path(segmentor_ckpt).is_file()
        if segmentor_ckpt is not None and not (missing and train_missing_segmentor):
            self.load_segmentor(segmentor_ckpt)
        segmentor = self.model.segmentor
        self.num_groups = self.model.discriminator.num_groups
        self.num_classes = segmentor.num_classes
        self.probe = self._new_discriminator()
        self.beta, self.gamma, self.seg_weight = float(beta), float(gamma), float(seg_weight)
        self.disc_lr_ratio = float(disc_lr_ratio)
        self.mask_format, self.report_dir = mask_format, report_dir
        self._fingerprint_at_start: str | None = None
        self.val_outputs = GatherAccumulator("dice_apple", "group", "disc_pred")
        self.test_outputs = GatherAccumulator(
            "dice_apple",
            "iou_apple",
            "dice_baseline",
            "iou_baseline",
            "group",
            "disc_pred",
            "probe_pred",
            "retrained_z_pred",
            "retrained_zp_pred",
        )

    def _new_discriminator(self) -> AttributeDiscriminator:
        """A fresh discriminator shaped like ``D_p`` (for the probes on ``z``)."""
        d = self.model.discriminator
        return AttributeDiscriminator(
            self.model.segmentor.latent_channels[-1], d.num_groups, d.hidden, d.depth, d.norm
        )

    def load_segmentor(self, path: str | Path) -> None:
        """Load the deployed segmentor's weights (strict: every tensor must match the variant)."""
        state = load_segmentor_state(path)
        try:
            self.model.segmentor.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise MedzooDataError(
                path,
                f"weights that do not fit the variant's segmentor ({first})",
                "a checkpoint of the same variant",
            ) from error

    def train(self, mode: bool = True) -> APPLEModule:
        super().train(mode)
        self.model.segmentor.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # --- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt_g = self.optimizer_factory(self.model.perturbers.parameters())
        opt_d = self.optimizer_factory([*self.model.discriminator.parameters(), *self.probe.parameters()])
        for group in opt_d.param_groups:
            group["lr"] *= self.disc_lr_ratio
            group["initial_lr"] = group["lr"]
        if self.scheduler_factory is None:
            return [opt_g, opt_d]
        schedulers = [self.scheduler_factory(opt) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], [{"scheduler": s, "interval": self.scheduler_interval} for s in schedulers]

    def _step_schedulers(self, interval: str) -> None:
        if self.scheduler_factory is None or self.scheduler_interval != interval:
            return
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def setup(self, stage: str) -> None:
        if (
            stage == "fit"
            and self.train_missing_segmentor
            and self.segmentor_ckpt is not None
            and not Path(self.segmentor_ckpt).is_file()
        ):
            self._train_baseline_segmentor(Path(self.segmentor_ckpt))

    def _train_baseline_segmentor(self, path: Path) -> None:
        """Stage 1 inside ``fit`` (``train_missing_segmentor``): train, save to ``path``, load, freeze."""
        from functools import partial

        import pytorch_lightning as pl

        from medzoo.lightning import AtomicCheckpointIO

        outer = self.trainer
        datamodule = outer.datamodule
        segmentor_args = dict(self.overrides.get("segmentor_args", {}))
        stage1 = SegmentorModule(
            variant=self.variant,
            overrides=segmentor_args,
            num_groups=self.num_groups,
            optimizer=partial(torch.optim.AdamW, lr=self.segmentor_lr, weight_decay=1e-4),
        )
        # The baseline run inherits the outer run's smoke-test limits (fast_dev_run, batch and step caps).
        inner = pl.Trainer(
            max_epochs=self.segmentor_epochs,
            max_steps=outer.max_steps,
            limit_train_batches=outer.limit_train_batches,
            limit_val_batches=outer.limit_val_batches,
            fast_dev_run=outer.fast_dev_run,
            accelerator="cpu" if self.device.type == "cpu" else "auto",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=path.parent,
            plugins=[AtomicCheckpointIO()],
        )
        try:
            inner.fit(stage1, datamodule=datamodule)
        finally:
            datamodule.trainer = outer  # the DataModule belongs to APPLE's trainer again
        path.parent.mkdir(parents=True, exist_ok=True)
        inner.save_checkpoint(path, weights_only=True)
        self.load_segmentor(path)

    def on_fit_start(self) -> None:
        self._fingerprint_at_start = state_fingerprint(self.model.segmentor)

    def on_fit_end(self) -> None:
        # The paper's premise: the deployed segmentor is not modified. Verify it bit for bit.
        if (
            self._fingerprint_at_start is not None
            and state_fingerprint(self.model.segmentor) != self._fingerprint_at_start
        ):
            raise MedzooTrainingError(
                "APPLE fit changed the frozen segmentor's weights; expected them bit-identical"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        opt_g, opt_d = self.optimizers()
        image, mask, groups = batch["image"], batch["mask"], batch["group"]
        self._check_groups(groups)
        latents = self.model.encode(image)  # z, frozen and without gradient

        # 1. discriminator D_p on z' (detached) and the probe on z
        with torch.no_grad():
            perturbed, _ = self.model.perturb(latents)
        d_loss = discriminator_loss(self.model.discriminator(perturbed[-1]), groups)
        probe_loss = discriminator_loss(self.probe(latents[-1]), groups)
        opt_d.zero_grad()
        # DDP's reducer expects every trainable parameter in every backward: touch G_p with a zero term.
        self.manual_backward(d_loss + probe_loss + 0.0 * _parameter_sum(self.model.perturbers))
        # Through the strategy (precision plugin, clipping hooks) but not counted as a trainer step, so that
        # `global_step` / `max_steps` count batches (one G_p step each), not optimiser calls.
        self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=_no_closure)

        # 2. perturber G_p against the updated D_p, keeping the frozen decoder's segmentation
        perturbed, deltas = self.model.perturb(latents)
        parts = perturber_loss(
            self.model.discriminator(perturbed[-1]),
            groups,
            self.model.segmentor.decode(perturbed),
            mask,
            self.beta,
            self.gamma,
            self.seg_weight,
        )
        opt_g.zero_grad()
        self.manual_backward(parts["loss"] + 0.0 * _parameter_sum(self.probe))
        opt_g.step()
        self._step_schedulers("step")

        size = len(image)
        self.log("train/loss_g", parts["loss"], prog_bar=True, batch_size=size)
        self.log("train/loss_d", d_loss, prog_bar=True, batch_size=size)
        self.log("train/loss_probe", probe_loss, batch_size=size)
        self.log("train/segmentation", parts["segmentation"], batch_size=size)
        self.log("train/entropy", parts["entropy"], batch_size=size)
        self.log("train/delta_max", max(float(d.detach().abs().max()) for d in deltas), batch_size=size)
        return parts["loss"]

    def on_train_epoch_end(self) -> None:
        self._step_schedulers("epoch")

    # --- evaluation ---------------------------------------------------------------------------------
    def _evaluate(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        latents = self.model.encode(image)
        perturbed, _ = self.model.perturb(latents)
        return {
            "baseline": self.model.segmentor.decode(latents),
            "apple": self.model.segmentor.decode(perturbed),
            "disc_pred": self.model.discriminator(perturbed[-1]).argmax(dim=1),
            "probe_pred": self.probe(latents[-1]).argmax(dim=1),
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._check_groups(batch["group"])
        out = self._evaluate(batch["image"])
        d, _ = _per_sample_scores(out["apple"], batch["mask"], self.num_classes)
        self.val_outputs.update(
            index=batch["index"],
            dice_apple=torch.as_tensor(d, device=self.device),
            group=batch["group"],
            disc_pred=out["disc_pred"],
        )

    def on_validation_epoch_end(self) -> None:
        values = {k: v.cpu().numpy() for k, v in self.val_outputs.compute().items()}
        self.val_outputs.reset()
        if not len(values["dice_apple"]):
            return
        summary = group_metric_summary(values["dice_apple"], values["group"], self._group_names())
        recalls = [
            np.mean(values["disc_pred"][values["group"] == g] == g) for g in np.unique(values["group"])
        ]
        self.log("val/dice", summary["overall"], prog_bar=True)
        self.log("val/es_dice", summary["es_sum"], prog_bar=True)
        self.log("val/dice_gap", summary["gap"])
        self.log("val/disc_balanced_accuracy", float(np.mean(recalls)), prog_bar=True)

    def _fit_retrained_probes(self) -> None:
        """Fresh discriminators on the frozen train-split latents ``z`` and ``z'`` (same seed, same steps)."""
        # Lightning evaluates under inference mode; these few optimiser steps need autograd.
        with torch.inference_mode(False), torch.enable_grad():
            self._retrained = self._train_probes()

    def _train_probes(self) -> dict[str, AttributeDiscriminator]:
        datamodule = self.trainer.datamodule
        latents: dict[str, list[torch.Tensor]] = {"z": [], "zp": []}
        groups: list[torch.Tensor] = []
        for batch in datamodule.eval_loader(datamodule.split("train")):
            with torch.no_grad():
                z = self.model.encode(batch["image"].to(self.device))
                zp, _ = self.model.perturb(z)
            latents["z"].append(z[-1])
            latents["zp"].append(zp[-1])
            groups.append(batch["group"].to(self.device))
        target = torch.cat(groups)
        probes = {}
        for name, chunks in latents.items():
            inputs = torch.cat(chunks)
            generator = torch.Generator().manual_seed(0)
            with torch.random.fork_rng(devices=[]):  # the same initial weights for both, global RNG untouched
                torch.manual_seed(0)
                probe = self._new_discriminator().to(self.device)
            optimizer = torch.optim.Adam(probe.parameters(), lr=self.probe_lr)
            for _ in range(self.probe_epochs):
                order = torch.randperm(len(target), generator=generator).to(self.device)
                for start in range(0, len(order), datamodule.batch_size):
                    rows = order[start : start + datamodule.batch_size]
                    loss = discriminator_loss(probe(inputs[rows]), target[rows])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            probes[name] = probe.eval()
        return probes

    def on_test_start(self) -> None:
        self._retrained = {}
        if self.probe_epochs > 0:
            self._fit_retrained_probes()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._check_groups(batch["group"])
        out = self._evaluate(batch["image"])
        if self._retrained:
            latents = self.model.encode(batch["image"])
            perturbed, _ = self.model.perturb(latents)
            retrained_z = self._retrained["z"](latents[-1]).argmax(dim=1)
            retrained_zp = self._retrained["zp"](perturbed[-1]).argmax(dim=1)
        else:
            retrained_z = retrained_zp = torch.full_like(batch["group"], -1)
        d_apple, j_apple = _per_sample_scores(out["apple"], batch["mask"], self.num_classes)
        d_base, j_base = _per_sample_scores(out["baseline"], batch["mask"], self.num_classes)
        as_tensor = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        self.test_outputs.update(
            index=batch["index"],
            dice_apple=as_tensor(d_apple),
            iou_apple=as_tensor(j_apple),
            dice_baseline=as_tensor(d_base),
            iou_baseline=as_tensor(j_base),
            group=batch["group"],
            disc_pred=out["disc_pred"],
            probe_pred=out["probe_pred"],
            retrained_z_pred=retrained_z,
            retrained_zp_pred=retrained_zp,
        )

    def on_test_epoch_end(self) -> None:
        values = self.test_outputs.compute()
        self.test_outputs.reset()
        self._finish_report(values)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return _predict_masks(self.model(batch["image"]), batch, self.num_classes)

    def prediction_writer(self) -> MaskWriter:
        return MaskWriter(self.mask_format)

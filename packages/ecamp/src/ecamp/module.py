"""LightningModules: ECAMP pre-training (MIM + SR + MLM) and fine-tuning (classification, segmentation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from ecamp.models import (
    ViTClassifier,
    ViTSegmenter,
    attention_to_patch_grid,
    create_encoder,
    create_model,
    masked_image_loss,
    segmentation_loss,
    weighted_mlm_loss,
    window_from_attention,
    window_sr_loss,
)
from medzoo.errors import MedzooDataError
from medzoo.lightning import GatherAccumulator, MedzooModule


def _adamw() -> OptimizerCallable:
    return lambda params: torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)


def decay_groups(module: torch.nn.Module) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on every tensor of 2 or more dimensions (weights, convolutions, the class
    and mask tokens, as the reference); none on biases and other 1-D tensors (norms)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def masked_accuracy(logits: torch.Tensor, labels: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Fraction of the positions ``where`` (B, T) bool whose arg-max of ``logits`` (B, T, V) is the label
    (B, T); 0 when there are none."""
    correct = (logits.argmax(-1) == labels) & where
    return correct.sum().float() / where.sum().clamp_min(1)


class _GroupedOptimizerMixin:
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(decay_groups(self))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }


class ECAMPModule(_GroupedOptimizerMixin, MedzooModule):
    """ECAMP pre-training: loss = w_mim * MIM + w_sr * SR + w_mlm * MLM (all 1 in the paper).

    Args:
        variant: ``MODEL_CONFIGS`` name ("paper", "tiny").
        overrides: settings replacing the variant's.
        window: how the SR window is placed: "attention" (default; the reference's attention-label file was
            never released): the ``window_cells`` x ``window_cells`` patch window with the most text-to-image
            cross-attention of the report's entity tokens (all tokens when it has none), from the current
            model, recomputed for an image in every ``window_update_every``-th epoch and reused in between;
            "center": a fixed centred window.
        window_cells: window side in patches (= SR cells; paper 12 of 14).
        window_update_every: epochs between window updates (1 = every step, on the fly).
        mim_normalize: "all" (reference: divide by every pixel) or "masked".
        sr_normalize: "all" (reference) or "window".
        mlm_positions: "all" (reference: every position, padding included) or "masked".
        mim_weight, sr_weight, mlm_weight: loss weights (``sr_weight=0`` skips the SR branch entirely).
        optimizer, scheduler, scheduler_interval: see ``MedzooModule`` (default AdamW .9/.95, lr 1.5e-4,
            wd .05; biases and 1-D parameters without decay).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        window: str = "attention",
        window_cells: int = 12,
        window_update_every: int = 1,
        mim_normalize: str = "all",
        sr_normalize: str = "all",
        mlm_positions: str = "all",
        mim_weight: float = 1.0,
        sr_weight: float = 1.0,
        mlm_weight: float = 1.0,
        optimizer: OptimizerCallable = _adamw(),
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        if window not in ("attention", "center"):
            raise MedzooDataError("--model.window", repr(window), "'attention' or 'center'")
        self.model = create_model(variant, **(overrides or {}))
        if not 1 <= window_cells <= self.model.grid:
            raise MedzooDataError(
                "--model.window_cells", str(window_cells), f"1..{self.model.grid} (patches per side)"
            )
        self.window, self.window_cells = window, int(window_cells)
        self.window_update_every = max(1, int(window_update_every))
        self.mim_normalize, self.sr_normalize, self.mlm_positions = mim_normalize, sr_normalize, mlm_positions
        self.weights = (mim_weight, sr_weight, mlm_weight)
        self.windows: dict[int, tuple[int, int]] = {}

    # ---- the SR window ----------------------------------------------------------------------------------

    def sr_windows(self, batch: dict[str, torch.Tensor], out: Any, training: bool) -> torch.Tensor:
        """(B, 2) top-left (row, col) of each image's SR window, in patches."""
        b = batch["image"].shape[0]
        if self.window == "center":
            start = (self.model.grid - self.window_cells) // 2
            return torch.full((b, 2), start, dtype=torch.long, device=batch["image"].device)
        entity = batch["entity"].float() * batch["attention_mask"].float()
        no_entity = entity.sum(1, keepdim=True) == 0
        tokens = torch.where(no_entity, batch["attention_mask"].float(), entity)
        grid = attention_to_patch_grid(
            out.cross_attention.detach(), tokens, out.ids_keep, self.model.encoder.num_patches
        )
        current = window_from_attention(grid, self.window_cells)
        if not training:
            return current
        refresh = self.current_epoch % self.window_update_every == 0
        rows = []
        for k, index in enumerate(batch["index"].tolist()):
            if refresh or index not in self.windows:
                self.windows[index] = (int(current[k, 0]), int(current[k, 1]))
            rows.append(self.windows[index])
        return torch.tensor(rows, dtype=torch.long, device=current.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        table = [[i, r, c] for i, (r, c) in sorted(self.windows.items())]
        checkpoint["sr_windows"] = torch.tensor(table, dtype=torch.long).reshape(-1, 3)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        table = checkpoint.get("sr_windows")
        if table is not None:
            self.windows = {int(i): (int(r), int(c)) for i, r, c in table.tolist()}

    # ---- steps ----------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        tokenizer = getattr(datamodule, "tokenizer", None)
        vocab = self.model.text.config.vocab_size
        if tokenizer is not None and tokenizer.get_vocab_size() > vocab:
            raise MedzooDataError(
                "tokenizer", f"{tokenizer.get_vocab_size()} tokens", f"at most the model's vocab_size {vocab}"
            )
        max_length = self.model.text.config.max_position_embeddings
        if getattr(datamodule, "max_length", max_length) > max_length:
            raise MedzooDataError("--data.max_length", str(datamodule.max_length), f"<= {max_length}")

    def evaluation_noise(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(B, L) patch-ranking noise that depends only on each sample's index."""
        rows = [
            torch.rand(self.model.encoder.num_patches, generator=torch.Generator().manual_seed(int(i)))
            for i in index.tolist()
        ]
        return torch.stack(rows).to(device)

    def losses(self, batch: dict[str, torch.Tensor], training: bool) -> dict[str, torch.Tensor]:
        """The three losses, their weighted sum and the MLM accuracy on masked tokens; in evaluation also the
        image-reliance accuracies of :meth:`image_reliance`."""
        use_sr = self.weights[1] != 0  # sr_weight 0 switches the SR branch off (not computed)
        # Evaluation masks patches with noise fixed per sample index: the validation loss is reproducible
        # (and equal under DDP and in one process).
        noise = None if training else self.evaluation_noise(batch["index"], batch["image"].device)
        out = self.model(
            batch["image"], batch["input_ids"], batch["attention_mask"], noise=noise, super_resolve=use_sr
        )
        mim = masked_image_loss(out.reconstruction, out.image, out.patch_mask, self.mim_normalize)
        sr = torch.zeros((), device=mim.device)
        if use_sr:
            top_left = self.sr_windows(batch, out, training)
            grid = self.model.grid
            sr = window_sr_loss(
                out.super_resolved, batch["image"], top_left, self.window_cells, grid, self.sr_normalize
            )
        mlm = weighted_mlm_loss(
            out.logits, batch["labels"], batch["weights"], batch["masked"], self.mlm_positions
        )
        w_mim, w_sr, w_mlm = self.weights
        values = {
            "loss": w_mim * mim + w_sr * sr + w_mlm * mlm,
            "mim": mim,
            "sr": sr,
            "mlm": mlm,
            "mlm_acc": masked_accuracy(out.logits, batch["labels"], batch["masked"]),
        }
        if not training:
            values.update(self.image_reliance(batch, out.logits, noise))
        return values

    @torch.no_grad()
    def image_reliance(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor, noise: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Does the report reconstruction read the image? MLM accuracy on the masked entity tokens with each
        report's own image (``mlm_entity_acc``) and with the next image of the batch in its place
        (``mlm_entity_acc_other_image``; the same patch positions are removed). Equal values mean the text
        branch ignores the image, so the image encoder learns nothing from the reports. In a batch of one the
        "other" image is the report's own."""
        entity = batch["masked"] & batch["entity"].bool()
        other_image = batch["image"].roll(1, dims=0)
        other = self.model(
            other_image, batch["input_ids"], batch["attention_mask"], noise=noise, super_resolve=False
        )
        return {
            "mlm_entity_acc": masked_accuracy(logits, batch["labels"], entity),
            "mlm_entity_acc_other_image": masked_accuracy(other.logits, batch["labels"], entity),
        }

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        values = self.losses(batch, training=True)
        b = batch["image"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in values.items()}, prog_bar=False, batch_size=b)
        return values["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        values = self.losses(batch, training=False)
        b = batch["image"].shape[0]
        self.log_dict({f"val/{k}": v for k, v in values.items()}, sync_dist=True, batch_size=b)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        values = self.losses(batch, training=False)
        self.log_dict(
            {f"test/{k}": v for k, v in values.items()}, sync_dist=True, batch_size=batch["image"].shape[0]
        )


# --------------------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------------------


def load_pretrained_encoder(path: str | Path) -> dict[str, torch.Tensor]:
    """The image-encoder tensors of an ECAMP pre-training checkpoint (Lightning .ckpt, ``weights_only``) or of
    a safetensors export, with the ``encoder.`` prefix removed."""
    from medzoo.weights import load_weights

    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(
            path, "no such file", "an `ecamp fit` checkpoint (.ckpt) or exported .safetensors"
        )
    try:
        state = load_weights(path, key="state_dict") if path.suffix == ".ckpt" else load_weights(path)
    except Exception as error:
        raise MedzooDataError(
            path, f"an unreadable checkpoint ({type(error).__name__})", "an `ecamp fit` checkpoint"
        ) from error
    prefix = next((p for p in ("model.encoder.", "encoder.") if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        raise MedzooDataError(
            path, "no image-encoder tensors", "keys starting with model.encoder. (ECAMP pre-training)"
        )
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class FinetuneModule(_GroupedOptimizerMixin, MedzooModule):
    """Fine-tuning of the pre-trained ECAMP image encoder: multi-label classification (``task="cls"``,
    BCE, macro AUROC) or binary segmentation (``task="seg"``, 10 * focal - log Dice, Dice).

    Args:
        variant, overrides: the ``MODEL_CONFIGS`` entry whose encoder settings are used.
        task: "cls" or "seg".
        num_classes: classification outputs.
        pretrained: an ``ecamp fit`` checkpoint or safetensors export whose encoder is loaded (None: random).
        linear_probe: freeze the encoder and train only a BatchNorm + linear head.
        pool: "avg" or "cls" features for classification.
        threshold: probability threshold of the predicted masks.
    """

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        task: str = "cls",
        num_classes: int = 14,
        pretrained: str | None = None,
        linear_probe: bool = False,
        pool: str = "avg",
        threshold: float = 0.5,
        optimizer: OptimizerCallable = _adamw(),
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        if task not in ("cls", "seg"):
            raise MedzooDataError("--model.task", repr(task), "'cls' or 'seg'")
        self.task, self.threshold = task, float(threshold)
        encoder = create_encoder(variant, **(overrides or {}))
        if pretrained is not None:
            state = load_pretrained_encoder(pretrained)
            missing, unexpected = encoder.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise MedzooDataError(pretrained, f"missing {missing[:3]} / unexpected {unexpected[:3]}",
                                      f"an encoder of variant {variant!r}")  # fmt: skip
        if task == "cls":
            self.model = ViTClassifier(encoder, num_classes, pool=pool, linear_probe=linear_probe)
            self.outputs = GatherAccumulator("scores", "targets")
        else:
            self.model = ViTSegmenter(encoder)
            self.outputs = GatherAccumulator("intersection", "total")
        self.class_names: list[str] | None = None

    monitor = "val/loss"
    monitor_mode = "min"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def setup(self, stage: str) -> None:
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
        if names is not None:
            self.class_names = list(names)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"] = self.class_names

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.class_names = checkpoint.get("class_names") or self.class_names

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["image"])
        if self.task == "cls":
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"]), logits
        return segmentation_loss(logits, batch["mask"]), logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch)
        self.log("train/loss", loss, batch_size=batch["image"].shape[0])
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        loss, logits = self.loss(batch)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=batch["image"].shape[0])
        if self.task == "cls":
            self.outputs.update(
                index=batch["index"], scores=logits.sigmoid().float(), targets=batch["labels"]
            )
        else:
            predicted = (logits.sigmoid() > self.threshold).float()
            target = batch["mask"]
            self.outputs.update(
                index=batch["index"],
                intersection=(predicted * target).flatten(1).sum(1),
                total=(predicted + target).flatten(1).sum(1),
            )

    def _eval_epoch_end(self, stage: str) -> None:
        values = self.outputs.compute()
        self.outputs.reset()
        if self.task == "cls":
            from medzoo.metrics import auroc

            scores, targets = values["scores"].cpu().numpy(), values["targets"].cpu().numpy()
            defined = (targets.min(0) != targets.max(0)) if len(targets) else np.zeros(0, bool)
            value = float(auroc(targets[:, defined], scores[:, defined])) if defined.any() else float("nan")
            self.log(f"{stage}/auc", value)
        else:
            # Dice over the whole split (all pixels pooled), as the reference's evaluation.
            value = float((2 * values["intersection"].sum() / values["total"].sum().clamp_min(1)).item())
            self.log(f"{stage}/dice", value)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        logits = self.model(batch["image"])
        return {"probabilities": logits.sigmoid().float().cpu(), "path": batch["path"], "size": batch["size"]}

    def prediction_writer(self):
        from ecamp.writers import ClassificationWriter, SegmentationWriter

        if self.task == "cls":
            return ClassificationWriter()
        return SegmentationWriter(threshold=self.threshold)


__all__ = ["ECAMPModule", "FinetuneModule", "decay_groups", "load_pretrained_encoder", "masked_accuracy"]

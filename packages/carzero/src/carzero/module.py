"""LightningModule of CARZero: the symmetric cross-entropy loss, the steps and zero-shot metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from carzero.factory import create_model, load_tokenizer
from carzero.models import MODEL_CONFIGS, carzero_loss
from medzoo.lightning import GatherAccumulator, MedzooModule, PredictionWriter
from medzoo.models import model_settings
from medzoo.synthetic import NIH_FINDINGS

HEAD_PERCENTILE = 65.0
TAIL_AT_MOST = 10


def frequency_groups(positives: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """CARZero's head / medium / tail classes by positive count: head > 65th percentile, tail <= 10.

    When the 65th percentile itself is below 10 (small test sets), the tail threshold is lowered to it so
    that the groups stay disjoint.
    """
    from medzoo.metrics import group_classes_by_frequency

    counts = np.asarray(positives, dtype=np.float64)
    head_above = float(np.percentile(counts, HEAD_PERCENTILE))
    return group_classes_by_frequency(
        counts, head_above=head_above, tail_at_most=min(TAIL_AT_MOST, head_above)
    )


def zero_shot_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Macro AUROC over classes, and macro AUROC within the head / medium / tail groups.

    Args:
        labels: (N, C) {0, 1}; scores: (N, C) raw logits. Classes with one label value are skipped (NaN).
    """
    from medzoo.metrics import auroc

    per_class = np.asarray(auroc(labels, scores, average=None), dtype=np.float64)
    out = {"auc": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")}
    for group, indices in frequency_groups(labels.sum(axis=0)).items():
        values = per_class[indices]
        out[f"auc_{group}"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


class CARZeroModule(MedzooModule):
    """Trains CARZero on image-sentence pairs; validates with the loss and zero-shot AUROC.

    Args:
        variant: named model configuration (`carzero.models.MODEL_CONFIGS`): "paper" (ViT-B/16 +
            BioClinicalBERT), "demo" (offline CPU demo, MiniLM) or "tiny" (tests).
        overrides: settings replacing the variant's (keyword arguments of `carzero.factory.build_carzero`),
            e.g. ``{"text_model": "/models/bert", "vit_weights": "mae_vitb16.pth", "head": "mlp"}``.
        freeze_text_encoder: keep the pretrained text encoder fixed (no gradients, eval mode, dropout off).
            The paper fine-tunes it (False); the CPU demo freezes it, which is ~1/3 cheaper per step and keeps
            the pretrained sentence semantics that the zero-shot prompts rely on with little training data.
        prompts: YAML of per-class prompts overriding the shipped ones (`carzero.alignment`).
        optimizer: the paper's Adam(lr 5e-5, betas (0.5, 0.999), weight_decay 1e-6) comes from the configs.
        scheduler: the paper's ReduceLROnPlateau(factor 0.5, patience 5) on val/loss comes from the configs.

    Validation logs ``val/loss`` and ``val/match_acc`` (synced over DDP ranks) on the image-report pairs and,
    when the DataModule has ``class_names``, the zero-shot ``val/auc`` (macro AUROC, the checkpoint monitor)
    and ``val/auc_head|medium|tail``, computed from scores gathered from every rank (exact under DDP).
    ``predict`` scores every input image against the configured findings (``data.class_names``, else the 14
    ChestX-ray14 findings), each through its class prompts.
    """

    monitor = "val/auc"
    monitor_mode = "max"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        freeze_text_encoder: bool = False,
        prompts: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        overrides = dict(overrides or {})
        self.settings = model_settings(MODEL_CONFIGS, variant, **overrides)
        self.model = create_model(variant, **overrides)
        self.freeze_text_encoder = freeze_text_encoder
        if freeze_text_encoder:
            self.model.text_encoder.requires_grad_(False)
        self.train()  # from_pretrained returns the text backbone in eval mode (dropout off)
        self.tokenizer = load_tokenizer(variant, **overrides)
        self.img_size = self.model.image_encoder.vit.patch_embed.img_size[0]
        self.prompts_path = prompts
        self._prompt_cache: dict[tuple[str, ...], tuple[torch.Tensor, ...]] = {}
        # Zero-shot scores and labels gathered from every DDP rank (sampler padding dropped by `index`).
        self.outputs = torch.nn.ModuleDict(
            {stage: GatherAccumulator("scores", "labels") for stage in ("val", "test")}
        )
        self.test_results: dict[str, float] = {}

    def train(self, mode: bool = True) -> CARZeroModule:
        super().train(mode)
        if self.freeze_text_encoder:
            self.model.text_encoder.eval()  # a frozen encoder also keeps its dropout off
        return self

    # ------------------------------------------------------------------------------------------- text
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in self.tokenizer(texts).items()}

    @torch.no_grad()
    def encode_prompts(self, class_names: Sequence[str], use_cache: bool = True):
        """Prompt features for `class_names`: (sentence (P, D), memory (P, 1+W, D), padding, owner (P,)).

        `owner[p]` is the class index of prompt p (a class may have several prompts, scores averaged).
        Cached per class list; the cache is cleared whenever the weights change (each training epoch).
        """
        from carzero.alignment import class_prompts, load_class_prompts

        key = tuple(class_names)
        if use_cache and key in self._prompt_cache:
            return self._prompt_cache[key]
        prompts = class_prompts(class_names, load_class_prompts(self.prompts_path))
        flat = [p for group in prompts for p in group]
        owner = torch.tensor([i for i, group in enumerate(prompts) for _ in group], device=self.device)
        was_training = self.model.training
        self.model.eval()
        sentence, memory, padding = self.model.encode_text(**self.tokenize(flat))
        self.train(was_training)
        features = (sentence, memory, padding, owner)
        if use_cache:
            self._prompt_cache[key] = features
        return features

    @torch.no_grad()
    def zero_shot(self, images: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C) zero-shot logits, (S_i2t + S_t2i^T)/2 per class."""
        sentence, memory, padding, owner = self.encode_prompts(class_names)
        image_global, image_memory = self.model.encode_image(images)
        per_prompt = self.model.zero_shot_scores(image_global, image_memory, sentence, memory, padding)
        counts = torch.bincount(owner, minlength=len(class_names)).to(per_prompt.dtype)
        summed = per_prompt.new_zeros(per_prompt.shape[0], len(class_names)).index_add_(1, owner, per_prompt)
        return summed / counts

    # ------------------------------------------------------------------------------------------ steps
    def forward(self, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """S_i2t (B, B) and S_t2i (B, B) raw logits for (B, 3, H, W) images and B sentences."""
        if not self.freeze_text_encoder:
            return self.model(images, **self.tokenize(texts))
        with torch.no_grad():
            text_features = self.model.encode_text(**self.tokenize(texts))
        image_global, image_memory = self.model.encode_image(images)
        return self.model.similarities(image_global, image_memory, *text_features)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        s_i2t, s_t2i = self(batch["image"], batch["text"])
        loss = carzero_loss(s_i2t, s_t2i)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["text"]))
        return loss

    def on_train_epoch_start(self) -> None:
        self._prompt_cache.clear()
        # A new random sentence per image every epoch, also when the loader is not rebuilt each epoch
        # (workers are not persistent, so they copy the dataset with the new epoch).
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "datasets", {}).get("train")
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def class_names(self, stage: str) -> list[str]:
        """The findings scored in `stage`: the DataModule's `test_class_names` for test, else `class_names`.

        ``predict`` falls back to the 14 ChestX-ray14 findings when no class names are configured.
        """
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(datamodule, "test_class_names" if stage == "test" else "class_names", None) or []
        if not names and stage == "predict":
            names = list(NIH_FINDINGS)
        return list(names)

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if "text" in batch:
            s_i2t, s_t2i = self(batch["image"], batch["text"])
            loss = carzero_loss(s_i2t, s_t2i)
            accuracy = (s_i2t.argmax(1) == torch.arange(len(s_i2t), device=self.device)).float().mean()
            size = len(batch["text"])
            # In-batch contrastive values: synced (mean over ranks) so every rank's scheduler steps alike.
            self.log(
                "val/loss", loss, prog_bar=True, batch_size=size, add_dataloader_idx=False, sync_dist=True
            )
            self.log("val/match_acc", accuracy, batch_size=size, add_dataloader_idx=False, sync_dist=True)
        else:
            self._collect(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect(batch, "test")

    def _collect(self, batch: dict[str, Any], stage: str) -> None:
        names = self.class_names(stage)
        if names:
            scores = self.zero_shot(batch["image"], names).float()
            self.outputs[stage].update(index=batch["index"], scores=scores, labels=batch["labels"].float())

    def _log_zero_shot(self, stage: str) -> dict[str, float]:
        if not self.class_names(stage):
            return {}
        gathered = self.outputs[stage].compute()  # identical on every rank
        self.outputs[stage].reset()
        if not len(gathered["scores"]):
            return {}
        labels = gathered["labels"].cpu().numpy()
        metrics = zero_shot_metrics(labels, gathered["scores"].cpu().numpy())
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "auc", add_dataloader_idx=False)
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._prompt_cache.clear()

    def on_validation_epoch_end(self) -> None:
        self._log_zero_shot("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_zero_shot("test")

    # ---------------------------------------------------------------------------------------- predict
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Zero-shot scores of a batch of images: {"name": [str], "path": [str], "scores": (B, C),
        "class_names": [str]} (raw logits (S_i2t + S_t2i^T)/2, averaged over each class's prompts)."""
        names = self.class_names("predict")
        return {
            "name": list(batch["name"]),
            "path": list(batch["path"]),
            "scores": self.zero_shot(batch["image"], names).float().cpu().numpy(),
            "class_names": names,
        }

    def prediction_writer(self) -> PredictionWriter:
        from carzero.writers import ZeroShotScoreWriter

        return ZeroShotScoreWriter()

"""LightningModule of CARZero: the symmetric cross-entropy loss, the steps and zero-shot metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from carzero.factory import create_model, load_tokenizer
from carzero.models import (
    MODEL_CONFIGS,
    carzero_loss,
    masked_patch_loss,
    patchify,
    symmetric_cross_entropy,
)
from medzoo.lightning import GatherAccumulator, MedzooModule, PredictionWriter
from medzoo.models import model_settings
from medzoo.synthetic import NIH_FINDINGS

HEAD_PERCENTILE = 65.0
TAIL_AT_MOST = 10
MIN_SCORED_CLASSES = 2  # a macro AUROC needs at least two classes with both label values


TAIL_RULES = ("fixed", "adaptive")


def frequency_groups(positives: Sequence[int] | np.ndarray, tail: str = "fixed") -> dict[str, np.ndarray]:
    """CARZero's head / medium / tail classes by positive count: head > 65th percentile, tail <= 10.

    Args:
        positives: (C,) positives per class in the test set.
        tail: "fixed" (the reference's `utils.py`): tail = at most 10 positives, always; when the 65th
            percentile is below 10 a class can then be head and tail at once and medium is empty, as in the
            reference. "adaptive" (ours, carzero <= 0.2): the tail threshold is lowered to the 65th
            percentile in that case, so the three groups stay disjoint.

    Returns:
        ``{"head": idx, "medium": idx, "tail": idx}`` sorted int64 class indices.
    """
    if tail not in TAIL_RULES:
        raise ValueError(f"tail must be one of {TAIL_RULES}, got {tail!r}")
    counts = np.asarray(positives, dtype=np.float64)
    head_above = float(np.percentile(counts, HEAD_PERCENTILE))
    tail_at_most = float(TAIL_AT_MOST) if tail == "fixed" else min(float(TAIL_AT_MOST), head_above)
    head, is_tail = counts > head_above, counts <= tail_at_most
    return {
        "head": np.flatnonzero(head),
        "medium": np.flatnonzero(~head & ~is_tail),
        "tail": np.flatnonzero(is_tail),
    }


def per_class_auroc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(C,) AUROC per class (scikit-learn's definition); NaN for a class with a single label value."""
    import warnings

    from medzoo.metrics import auroc

    with warnings.catch_warnings():  # the skipped classes are reported by the callers instead
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(auroc(labels, scores, average=None), dtype=np.float64)


def zero_shot_metrics(
    labels: np.ndarray, scores: np.ndarray, tail: str = "fixed", min_classes: int = MIN_SCORED_CLASSES
) -> dict[str, float]:
    """Macro AUROC over classes, and macro AUROC within the head / medium / tail groups.

    Args:
        labels: (N, C) {0, 1}; scores: (N, C) raw logits. Classes with one label value cannot be scored
            and are left out of every mean. The macro AUROC over fewer than `min_classes` scored classes is
            NaN (not a macro AUROC; `evaluate` says so and lists the classes); a group's mean needs one.
        tail: "fixed" (reference) or "adaptive", see `frequency_groups`.
    """
    per_class = per_class_auroc(labels, scores)

    def macro(values: np.ndarray, minimum: int) -> float:
        finite = values[np.isfinite(values)]
        return float(finite.mean()) if len(finite) >= max(1, minimum) else float("nan")

    out = {"auc": macro(per_class, min_classes)}
    for group, indices in frequency_groups(labels.sum(axis=0), tail).items():
        out[f"auc_{group}"] = macro(per_class[indices], 1)
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
        vit_weights: a timm-layout ViT state dict to start from (`carzero pretrain` writes one; the paper's
            MAE-pretrained ViT-B/16); same as ``overrides: {"vit_weights": ...}``.
        global_warmup_epochs: ours, off in the paper (0): for the first N epochs train with a CLIP-style
            global contrastive loss between the image CLS token and the sentence embedding instead of the
            cross-attention loss, so the encoders carry the findings before the fusion starts learning.
        image_lr_scale: the image encoder's learning rate as a multiple of the optimizer's (ours; 1 = the
            paper, one rate for everything). The demo fine-tunes its MAE-pretrained ViT at 0.1x.
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
        vit_weights: str | None = None,
        freeze_text_encoder: bool = False,
        global_warmup_epochs: int = 0,
        image_lr_scale: float = 1.0,
        prompts: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        overrides = dict(overrides or {})
        if vit_weights is not None:
            overrides["vit_weights"] = str(vit_weights)
        self.global_warmup_epochs = int(global_warmup_epochs)
        self.image_lr_scale = float(image_lr_scale)
        # CLIP's learnable temperature for the optional global warm-up (unused by the paper's loss).
        self.global_logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
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

    def configure_optimizers(self) -> Any:
        if self.image_lr_scale == 1.0:
            return super().configure_optimizers()
        factory, scale = self.optimizer_factory, self.image_lr_scale
        image = {id(p) for p in self.model.image_encoder.parameters()}

        def grouped(parameters: Any) -> torch.optim.Optimizer:
            parameters = list(parameters)
            optimizer = factory(
                [
                    {"params": [p for p in parameters if id(p) not in image]},
                    {"params": [p for p in parameters if id(p) in image]},
                ]
            )
            optimizer.param_groups[1]["lr"] *= scale  # group 1: the image encoder
            return optimizer

        self.optimizer_factory = grouped
        try:
            return super().configure_optimizers()
        finally:
            self.optimizer_factory = factory

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
        """Prompt features for `class_names`: (sentence (P, D), memory (P, 1+W, D), padding, owner (P,),
        the fusion's keys/values of the memory per layer).

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
        keys_values = self.model.fusion.memory_keys_values(memory)  # reused by every batch
        self.train(was_training)
        features = (sentence, memory, padding, owner, keys_values)
        if use_cache:
            self._prompt_cache[key] = features
        return features

    @torch.no_grad()
    def zero_shot(
        self, images: torch.Tensor, class_names: Sequence[str], return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalised images -> (B, C) zero-shot logits, (S_i2t + S_t2i^T)/2 per class.

        With ``return_attention`` also (B, C, g, g) maps: each class prompt's image->text cross-attention on
        the g x g patch grid (`CARZero.image_attention_maps`, averaged over the class's prompts).
        """
        sentence, memory, padding, owner, keys_values = self.encode_prompts(class_names)
        image_global, image_memory = self.model.encode_image(images)
        per_prompt = self.model.zero_shot_scores(
            image_global, image_memory, sentence, memory, padding, keys_values
        )
        scores = self._per_class(per_prompt, owner, len(class_names))
        if not return_attention:
            return scores
        maps = self.model.image_attention_maps(image_memory, sentence)  # (B, P, N)
        maps = self._per_class(maps.transpose(1, 2), owner, len(class_names)).transpose(1, 2)  # (B, C, N)
        grid = math.isqrt(maps.shape[-1])
        return scores, maps.reshape(*maps.shape[:2], grid, grid)

    @staticmethod
    def _per_class(per_prompt: torch.Tensor, owner: torch.Tensor, classes: int) -> torch.Tensor:
        """(..., P) values per prompt -> (..., C) means over each class's prompts."""
        counts = torch.bincount(owner, minlength=classes).to(per_prompt.dtype)
        summed = per_prompt.new_zeros(*per_prompt.shape[:-1], classes).index_add_(-1, owner, per_prompt)
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

    def global_contrastive_loss(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """CLIP's symmetric InfoNCE between image CLS tokens and sentence embeddings (warm-up only)."""
        tokens = self.tokenize(texts)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_text_encoder):
            sentence = self.model.encode_text(**tokens)[0]
        image_global, _ = self.model.encode_image(images)
        # Through the fusion's shared LayerNorm, as the fusion sees them: the raw sentence embeddings of
        # different findings are nearly parallel (one large common component), their normalised ones are not.
        norm = self.model.fusion.shared_norm
        image_global = torch.nn.functional.normalize(norm(image_global), dim=-1)
        sentence = torch.nn.functional.normalize(norm(sentence), dim=-1)
        logits = self.global_logit_scale.clamp(max=math.log(100.0)).exp() * image_global @ sentence.t()
        return symmetric_cross_entropy(logits)

    def in_global_warmup(self) -> bool:
        return self._trainer is not None and self.current_epoch < self.global_warmup_epochs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.in_global_warmup():
            loss = self.global_contrastive_loss(batch["image"], batch["text"])
            self.log("train/global_loss", loss, prog_bar=True, batch_size=len(batch["text"]))
            return loss
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
        # The checkpoint monitor stays defined with one scored class (tiny validation splits).
        metrics = zero_shot_metrics(labels, gathered["scores"].cpu().numpy(), min_classes=1)
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


class MAEPretrainModule(MedzooModule):
    """`carzero pretrain`: masked-autoencoder pre-training of the ViT image encoder on the training images.

    Args:
        variant: the CARZero configuration whose ViT is pre-trained (`carzero.models.MODEL_CONFIGS`); the MAE
            decoder comes from `carzero.models.MAE_DECODERS[variant]`.
        overrides: ViT settings replacing the variant's (`img_size`, `patch_size`, `vit_dim`, ...).
        decoder: MAE decoder settings replacing the variant's (`decoder_dim`, `decoder_depth`,
            `decoder_heads`, `mask_ratio`).
        normalize_target: per-patch normalised pixel targets (MAE's norm_pix_loss).
        weights_name: file written into `trainer.default_root_dir` at the end of every training epoch: the
            ViT's timm-layout state dict (safetensors) that `carzero fit --model.vit_weights` loads.

    Batches are the DataModule's training items; only ``batch["image"]`` is used. Logs ``train/loss`` and
    ``val/loss`` (the masked-patch MSE; validation masks with a fixed seed so epochs compare).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        normalize_target: bool = True,
        weights_name: str = "vit_weights.safetensors",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        from carzero.factory import create_image_encoder
        from carzero.models import MAE_DECODERS, MaskedAutoencoder

        vit_overrides = {k: v for k, v in dict(overrides or {}).items() if k != "vit_weights"}
        if variant not in MAE_DECODERS:
            raise ValueError(
                f"unknown variant {variant!r} for pretrain; expected one of {sorted(MAE_DECODERS)}"
            )
        settings = {**MAE_DECODERS[variant], **dict(decoder or {})}
        self.mae = MaskedAutoencoder(
            create_image_encoder(variant, **vit_overrides), normalize_target=normalize_target, **settings
        )
        self.variant = variant
        self.weights_name = weights_name
        # Per-image validation losses gathered from every DDP rank (sampler padding dropped by `index`).
        self.val_losses = GatherAccumulator("loss")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.mae(batch["image"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx:
            return  # the labelled copy of the validation images (zero-shot) is not needed here
        # Each image's mask depends only on its index, so the validation loss does not depend on batching
        # or on the number of DDP ranks.
        num_patches = self.mae.encoder.vit.patch_embed.num_patches
        noise = torch.stack(
            [torch.rand(num_patches, generator=torch.Generator().manual_seed(int(i))) for i in batch["index"]]
        ).to(batch["image"].device)
        _, prediction, mask = self.mae(batch["image"], noise=noise)
        target = patchify(batch["image"], self.mae.patch_size)
        per_image = torch.stack(
            [masked_patch_loss(p[None], t[None], m[None], self.mae.normalize_target)
             for p, t, m in zip(prediction, target, mask, strict=True)]
        )  # fmt: skip
        self.val_losses.update(index=batch["index"], loss=per_image.detach())

    def on_validation_epoch_end(self) -> None:
        gathered = self.val_losses.compute()  # identical on every rank
        self.val_losses.reset()
        if len(gathered["loss"]):
            self.log("val/loss", gathered["loss"].float().mean(), prog_bar=True)

    def vit_state_dict(self) -> dict[str, torch.Tensor]:
        """The pre-trained ViT in timm's layout (what `--model.vit_weights` loads)."""
        return self.mae.encoder_state_dict()

    def on_train_epoch_end(self) -> None:
        if self._trainer is None or not self.trainer.is_global_zero:
            return
        from pathlib import Path

        from medzoo.weights import save_weights

        path = Path(self.trainer.default_root_dir) / self.weights_name
        metadata = {"package": "carzero", "variant": self.variant, "epoch": str(self.current_epoch)}
        save_weights({k: v.cpu() for k, v in self.vit_state_dict().items()}, path, metadata=metadata)

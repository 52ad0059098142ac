"""The CT vision-language model: ViT3D -> projector -> visual tokens at the `<image>` token of a causal LM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ct_vlm.models.vit3d import ViT3D

IGNORE_INDEX = -100  # label of positions the loss ignores (prompt, image, padding), as transformers


def splice_visual_tokens(
    input_ids: torch.Tensor,
    text_embeds: torch.Tensor,
    visual_tokens: torch.Tensor,
    image_token_id: int,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Replace the one ``<image>`` token of every row by that row's visual tokens.

    Every row keeps its padding where it was (left or right), so rows stay aligned: the output length is
    L - 1 + K for every row.

    Args:
        input_ids: (B, L) token ids, exactly one ``image_token_id`` per row.
        text_embeds: (B, L, H) the language model's input embeddings of ``input_ids``.
        visual_tokens: (B, K, H).
        attention_mask: (B, L) {0, 1} (default all ones).
        labels: (B, L) targets; the visual positions get IGNORE_INDEX.

    Returns:
        embeds (B, L-1+K, H), attention_mask (B, L-1+K), labels (B, L-1+K) or None.

    Raises:
        ValueError: a row without, or with more than one, placeholder.
    """
    counts = (input_ids == image_token_id).sum(dim=1)
    if not bool((counts == 1).all()):
        row = int((counts != 1).nonzero()[0])
        raise ValueError(
            f"row {row} of the prompt holds {int(counts[row])} <image> placeholders (token id "
            f"{image_token_id}); expected exactly one per prompt"
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    b, k = visual_tokens.shape[:2]
    positions = (input_ids == image_token_id).int().argmax(dim=1)
    embeds, masks, targets = [], [], []
    visual_mask = attention_mask.new_ones(k)
    for i in range(b):
        p = int(positions[i])
        embeds.append(torch.cat([text_embeds[i, :p], visual_tokens[i], text_embeds[i, p + 1 :]]))
        masks.append(torch.cat([attention_mask[i, :p], visual_mask, attention_mask[i, p + 1 :]]))
        if labels is not None:
            ignore = labels.new_full((k,), IGNORE_INDEX)
            targets.append(torch.cat([labels[i, :p], ignore, labels[i, p + 1 :]]))
    return torch.stack(embeds), torch.stack(masks), torch.stack(targets) if labels is not None else None


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting only attended tokens (as transformers' generate does): left or right padding
    then gives every real token the same position in training and in generation."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def apply_lora(
    language_model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
) -> nn.Module:
    """Wrap a causal LM with peft LoRA adapters; the base weights are frozen, the adapters train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(language_model, config)


class CTVLM(nn.Module):
    """E3D-GPT-style model: 3D ViT tokens -> projector -> visual tokens at the ``<image>`` placeholder.

    Args:
        vision: the 3D ViT (its token grid feeds the projector).
        projector: maps (B, N, D) ViT tokens to (B, K, H) visual tokens, H = the LM's hidden size.
        language_model: any Hugging Face causal LM (``PreTrainedModel`` or a peft ``PeftModel``) whose
            ``get_input_embeddings()`` embeds token ids and whose forward/generate accept ``inputs_embeds``.
        image_token_id: the tokenizer's id of ``<image>``.
        trainable_vision_blocks: -1 trains the whole ViT; 0 freezes it; k > 0 trains only its last k blocks
            and final norm (partly frozen).

    ``forward(volume (B, 1, X, Y, Z), input_ids (B, L), attention_mask, labels)`` returns the LM output with
    its loss (shifted next-token cross-entropy over positions whose label is not IGNORE_INDEX).
    """

    def __init__(
        self,
        vision: ViT3D,
        projector: nn.Module,
        language_model: nn.Module,
        image_token_id: int,
        trainable_vision_blocks: int = -1,
    ) -> None:
        super().__init__()
        self.vision, self.projector, self.language_model = vision, projector, language_model
        self.image_token_id = int(image_token_id)
        self.set_vision_trainable(trainable_vision_blocks)

    @property
    def num_visual_tokens(self) -> int:
        return int(self.projector.num_tokens)

    def set_vision_trainable(self, blocks: int) -> None:
        """-1: all of the ViT trains; 0: frozen; k: only the last k blocks and the final norm train."""
        self.trainable_vision_blocks = blocks
        self.vision.requires_grad_(blocks < 0)
        if blocks > 0:
            for block in self.vision.blocks[-blocks:]:
                block.requires_grad_(True)
            self.vision.norm.requires_grad_(True)

    def encode_volume(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) -> (B, K, H) visual tokens."""
        if volume.ndim != 5:
            raise ValueError(
                f"volume of rank {volume.ndim} (shape {tuple(volume.shape)}); expected rank 5 (B, C, X, Y, Z)"
            )
        return self.projector(self.vision(volume))

    def prepare_inputs(
        self,
        volume: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Embed the prompt and splice in the visual tokens (see :func:`splice_visual_tokens`)."""
        visual = self.encode_volume(volume)
        text = self.language_model.get_input_embeddings()(input_ids)
        return splice_visual_tokens(
            input_ids, text, visual.to(text.dtype), self.image_token_id, attention_mask, labels
        )

    def forward(
        self,
        volume: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        embeds, mask, targets = self.prepare_inputs(volume, input_ids, attention_mask, labels)
        return self.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask), labels=targets
        )

    @torch.no_grad()
    def generate(
        self,
        volume: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Greedy (default) or sampled generation; prompts must be left-padded. Returns new token ids only
        (B, T)."""
        embeds, mask, _ = self.prepare_inputs(volume, input_ids, attention_mask)
        generate_kwargs.setdefault("do_sample", False)
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=mask, **generate_kwargs)

    @torch.no_grad()
    def next_token_logits(
        self, volume: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, V) logits of the token after the (left-padded) prompt: yes/no probabilities for diagnosis."""
        embeds, mask, _ = self.prepare_inputs(volume, input_ids, attention_mask)
        output = self.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask)
        )
        return output.logits[:, -1]

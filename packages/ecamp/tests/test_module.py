"""Training behaviour: one image-report pair is memorised (MLM accuracy 100 %); the optimiser groups skip
decay on biases and norms; the SR window comes from the entity tokens' attention."""

from __future__ import annotations

import numpy as np
import torch

from ecamp.module import ECAMPModule, decay_groups
from ecamp.text import EntityAwareMasker


def one_pair(tokenizer):
    masker = EntityAwareMasker(tokenizer, max_length=16)
    report = masker("small left pleural effusion and mild edema .", np.random.default_rng(2))
    assert sum(report.masked) >= 3
    image = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    return {
        "image": image,
        "input_ids": torch.tensor([report.masked_ids]),
        "labels": torch.tensor([report.ids]),
        "attention_mask": torch.tensor([report.attention]),
        "weights": torch.tensor([report.weights]),
        "masked": torch.tensor([report.masked]),
        "entity": torch.tensor([report.entity]),
        "index": torch.tensor([0]),
    }


def test_overfitting_one_pair_reaches_full_mlm_accuracy(tokenizer):
    torch.manual_seed(0)
    module = ECAMPModule("tiny", {"text_dropout": 0.0, "vocab_size": 64, "max_length": 16}, window_cells=6)
    batch = one_pair(tokenizer)
    optimizer = torch.optim.AdamW(decay_groups(module), lr=2e-3, weight_decay=0.0)
    first = None
    for _ in range(120):
        values = module.losses(batch, training=True)
        first = first if first is not None else values["loss"].item()
        optimizer.zero_grad()
        values["loss"].backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        values = module.losses(batch, training=False)
    assert values["mlm_acc"].item() == 1.0
    assert values["loss"].item() < 0.5 * first


def test_decay_groups_skip_biases_and_one_dimensional_parameters():
    module = ECAMPModule("tiny", window_cells=6)
    decay, no_decay = decay_groups(module)
    assert no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.parameters()))


def test_sr_window_follows_entity_attention_and_is_cached(tokenizer):
    module = ECAMPModule("tiny", {"vocab_size": 64, "max_length": 16}, window_cells=6, window_update_every=2)
    batch = one_pair(tokenizer)

    class Out:  # the fields sr_windows reads
        ids_keep = torch.arange(64)[None]
        cross_attention = torch.zeros(1, 4, 16, 64)

    entity = int(torch.nonzero(batch["entity"][0])[0])
    Out.cross_attention[0, :, entity, 63] = 1.0  # the entity looks at the bottom-right patch
    Out.cross_attention[0, :, 1, 0] = 1.0  # a non-entity token looks at the top-left patch
    assert module.sr_windows(batch, Out, training=True).tolist() == [[2, 2]]
    assert module.windows == {0: (2, 2)}  # kept for the epochs between updates
    Out.cross_attention.zero_()
    Out.cross_attention[0, :, entity, 0] = 1.0
    assert module.sr_windows(batch, Out, training=False).tolist() == [[0, 0]]  # evaluation: current attention
    center = ECAMPModule("tiny", {"vocab_size": 64, "max_length": 16}, window="center", window_cells=6)
    assert center.sr_windows(batch, Out, training=True).tolist() == [[1, 1]]


def test_evaluation_losses_are_reproducible(tokenizer):
    torch.manual_seed(0)
    module = ECAMPModule("tiny", {"vocab_size": 64, "max_length": 16}, window_cells=6).eval()
    batch = one_pair(tokenizer)
    with torch.no_grad():
        first = module.losses(batch, training=False)
        torch.rand(10)  # the global random state moves; evaluation masking does not depend on it
        second = module.losses(batch, training=False)
        other = module.losses({**batch, "index": torch.tensor([7])}, training=False)
    assert first["loss"].item() == second["loss"].item()
    assert first["mim"].item() != other["mim"].item()  # another sample index, another patch mask


def test_every_parameter_gets_a_gradient(tokenizer):
    # DDP refuses parameters that take no part in the loss.
    module = ECAMPModule("tiny", {"vocab_size": 64, "max_length": 16}, window_cells=6)
    module.losses(one_pair(tokenizer), training=True)["loss"].backward()
    assert [n for n, p in module.named_parameters() if p.grad is None] == []


def test_image_reliance_sees_a_text_branch_that_reads_the_image(tokenizer):
    # Two reports that differ only in their (always masked) entity, each with a distinct image: only the image
    # tells the entity, so after overfitting the own-image accuracy is 1 and the swapped-image accuracy 0.
    torch.manual_seed(0)
    masker = EntityAwareMasker(tokenizer, max_length=8, p_entity=1.0, p_other=0.0)
    reports = [masker(text, np.random.default_rng(0)) for text in ("mild effusion .", "mild cardiomegaly .")]
    assert reports[0].masked_ids == reports[1].masked_ids and reports[0].ids != reports[1].ids
    noise = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    batch = {
        "image": noise * 0.1 + torch.tensor([1.0, -1.0])[:, None, None, None],
        **{k: torch.tensor([getattr(r, f) for r in reports]) for k, f in
           (("input_ids", "masked_ids"), ("labels", "ids"), ("attention_mask", "attention"),
            ("weights", "weights"), ("masked", "masked"), ("entity", "entity"))},
        "index": torch.tensor([0, 1]),
    }  # fmt: skip
    module = ECAMPModule("tiny", {"text_dropout": 0.0, "vocab_size": 64, "max_length": 8}, window_cells=6)
    optimizer = torch.optim.AdamW(decay_groups(module), lr=2e-3, weight_decay=0.0)
    for _ in range(60):
        loss = module.losses(batch, training=True)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        values = module.losses(batch, training=False)
        swapped = module.losses({**batch, "image": batch["image"].flip(0)}, training=False)
    assert values["mlm_entity_acc"].item() == 1.0
    assert values["mlm_entity_acc_other_image"].item() == 0.0
    # the "other image" accuracy is the own-image accuracy of the batch with its images swapped
    assert values["mlm_entity_acc_other_image"].item() == swapped["mlm_entity_acc"].item()

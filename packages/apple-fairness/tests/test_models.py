"""Segmentor adapters reproduce the wrapped networks exactly; the perturber respects its bound."""

from __future__ import annotations

import pytest
import torch

from apple_fairness.losses import segmentation_loss
from apple_fairness.models import (
    MODEL_CONFIGS,
    AttentionUNetSegmentor,
    LatentPerturber,
    SAMSegmentor,
    UNetSegmentor,
    create_model,
    create_segmentor,
)
from medzoo.errors import MedzooDataError


@pytest.mark.parametrize("cls", [UNetSegmentor, AttentionUNetSegmentor])
def test_monai_adapters_equal_the_monai_forward(cls):
    seg = cls(in_channels=1, num_classes=3, channels=(4, 8, 16, 32), strides=(2, 2, 2)).eval()
    x = torch.rand(2, 1, 32, 32)
    latents = seg.encode(x)
    assert [z.shape[1] for z in latents] == list(seg.latent_channels) == [4, 8, 16, 32]
    assert torch.equal(seg.decode(latents), seg.net(x))  # bit-identical to MONAI's own forward
    # the bottleneck really is the input of the decoder: changing it changes the output
    changed = [*latents[:-1], latents[-1] + 1.0]
    assert not torch.allclose(seg.decode(changed), seg.net(x))


def test_unet_skips_matter_and_monai_state_dict_loads():
    from monai.networks.nets import UNet

    seg = UNetSegmentor(1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    reference = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, norm="batch").eval()
    seg.net.load_state_dict(reference.state_dict())
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(seg(x), reference(x))
    latents = seg.encode(x)
    latents[0] = torch.zeros_like(latents[0])
    assert not torch.allclose(seg.decode(latents), reference(x))


def test_cmunext_overfits_one_batch():
    seg = create_segmentor("tiny_cmunext")
    x = torch.rand(2, 1, 32, 32)
    y = (x[:, 0] > 0.5).long()
    opt = torch.optim.Adam(seg.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = segmentation_loss(seg(x), y)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert [z.shape[-1] for z in seg.encode(x)] == [32, 16, 8, 4]
    assert float(loss) < 0.5 * first


def test_sam_segmentors_decode_and_load_weights():
    torch.manual_seed(0)
    samed = create_segmentor("tiny_samed", num_classes=3)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        logits = samed(x)
    assert logits.shape == (2, 3, 64, 64)
    # save -> load into a differently initialised copy gives identical outputs
    torch.manual_seed(1)
    copy = create_segmentor("tiny_samed", num_classes=3)
    report = copy.load_sam_weights(samed.sam.state_dict())
    assert report == {"missing": [], "unexpected": [], "skipped_shape": []}
    with torch.no_grad():
        assert torch.equal(copy(x), logits)
    # a SAM with another number of mask tokens loads everything but the mismatched tensors
    other = create_segmentor("tiny_samed", num_classes=2)
    skipped = other.load_sam_weights(samed.sam.state_dict())["skipped_shape"]
    assert skipped and all("mask" in k or "iou" in k for k in skipped)


def test_medsam_box_mode_gives_sigmoid_probabilities():
    medsam = create_segmentor("tiny_medsam").eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        logits = medsam(x)
    assert torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0]))
    assert torch.allclose(logits.softmax(1)[:, 1], logits[:, 1].sigmoid(), atol=1e-6)
    with pytest.raises(ValueError, match="expected 64x64"):
        medsam.encode(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="expected 2"):
        SAMSegmentor(num_classes=3, prompt="box", image_size=64, patch_size=8, hidden_size=32, num_layers=1)


def test_perturber_delta_has_latent_shape_and_respects_bound():
    g = LatentPerturber(channels=6, hidden=8, bound=0.25)
    z = torch.randn(3, 6, 5, 7)
    assert torch.equal(g(z), torch.zeros_like(z))  # zero-initialised output layer: starts at delta = 0
    torch.nn.init.normal_(g.out.weight, std=10.0)
    delta = g(z * 1e4)
    assert delta.shape == z.shape
    assert float(delta.abs().max()) <= 0.25 and float(delta.abs().max()) > 0.2  # saturates at, never past


@pytest.mark.parametrize("perturb_skips", [False, True])
def test_apple_perturbs_the_bottleneck_or_every_latent(perturb_skips):
    model = create_model("tiny", perturb_skips=perturb_skips, delta_bound=0.5)
    for g in model.perturbers:
        torch.nn.init.normal_(g.out.weight, std=1.0)
    x = torch.rand(2, 1, 32, 32)
    latents = model.encode(x)
    perturbed, deltas = model.perturb(latents)
    targets = latents if perturb_skips else latents[-1:]
    assert [d.shape for d in deltas] == [z.shape for z in targets]
    assert all(float(d.abs().max()) <= 0.5 for d in deltas)
    for z, zp in zip(latents[:-1], perturbed[:-1], strict=True):
        assert torch.equal(z, zp) != perturb_skips
    assert not latents[-1].requires_grad  # the frozen encoder gives no gradient


def test_apple_keeps_the_segmentor_frozen_in_eval_mode():
    model = create_model("tiny").train()
    assert not model.segmentor.training and all(not p.requires_grad for p in model.segmentor.parameters())
    assert all(p.requires_grad for p in model.perturbers.parameters())


def test_configs_and_bad_names():
    assert {"paper", "tiny"} <= set(MODEL_CONFIGS)
    model = create_model("tiny", segmentor_args={"num_classes": 3}, num_groups=3)
    assert model.segmentor.num_classes == 3 and model.segmentor.latent_channels == (8, 16, 32, 64)
    with pytest.raises(MedzooDataError, match="one of"):
        create_model("huge")
    with pytest.raises(MedzooDataError, match="unknown settings"):
        create_model("tiny", depth=3)

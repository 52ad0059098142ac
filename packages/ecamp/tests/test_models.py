"""ECAMP networks and losses: known answers, two implementations agreeing, what each part can see."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ecamp import MODEL_CONFIGS, create_encoder, create_model
from ecamp.models import (
    SuperResolutionHead,
    ViTSegmenter,
    attention_to_patch_grid,
    dice_coefficient,
    focal_loss,
    masked_image_loss,
    patchify,
    random_masking,
    segmentation_loss,
    unpatchify,
    weighted_mlm_loss,
    window_from_attention,
    window_sr_loss,
)
from medzoo.errors import MedzooDataError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("tiny", text_dropout=0.0).eval()


def inputs(b=2, t=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, 128, 128, generator=g)
    ids = torch.randint(5, 1000, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[:, 12:] = 0
    return image, ids, mask


def test_paper_config_is_the_paper():
    paper = MODEL_CONFIGS["paper"]
    vit = (paper["img_size"], paper["patch_size"], paper["embed_dim"], paper["depth"], paper["num_heads"])
    assert vit == (224, 16, 768, 12, 12)
    assert (paper["decoder_embed_dim"], paper["decoder_depth"], paper["decoder_num_heads"]) == (512, 4, 16)
    assert (paper["vocab_size"], paper["text_hidden"], paper["text_layers"], paper["text_heads"]) == (
        30000,
        768,
        6,
        6,
    )
    assert (paper["text_ffn_dim"], paper["max_length"]) == (1536, 256)
    with pytest.raises(MedzooDataError, match="one of"):
        create_model("huge")
    with pytest.raises(MedzooDataError, match="unknown settings"):
        create_model("tiny", colour=3)


def test_patchify_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    patches = patchify(x, 4)
    assert torch.equal(unpatchify(patches, 4), x)
    # patch 1 is the top-right 4x4 block; its first pixel is (row 0, col 4), channels last
    assert patches[0, 1, :3].tolist() == [x[0, 0, 0, 4].item(), x[0, 1, 0, 4].item(), x[0, 2, 0, 4].item()]


def test_random_masking_keeps_a_quarter_and_the_mask_matches():
    tokens = torch.randn(3, 16, 8)
    kept, mask, _restore, keep = random_masking(tokens, 0.75)
    assert kept.shape == (3, 4, 8) and mask.sum(1).tolist() == [12, 12, 12]
    for b in range(3):
        assert torch.equal(kept[b], tokens[b, keep[b]])
        assert mask[b, keep[b]].sum() == 0


def test_mim_loss_counts_masked_patches_only():
    target = torch.zeros(1, 3, 8, 8)
    prediction = torch.ones(1, 3, 8, 8)
    patch_mask = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # only the top-left 4x4 patch removed
    # all: masked squared error (16 px x 3 ch x 1) over every pixel (192) = 0.25; masked: 1.
    assert masked_image_loss(prediction, target, patch_mask, "all").item() == pytest.approx(0.25)
    assert masked_image_loss(prediction, target, patch_mask, "masked").item() == pytest.approx(1.0)
    changed = prediction.clone()
    changed[..., 4:, :] = 100.0  # errors on visible patches only
    changed[..., :4, 4:] = 100.0
    assert masked_image_loss(changed, target, patch_mask, "all").item() == pytest.approx(0.25)


def test_sr_loss_counts_the_window_only():
    target = torch.zeros(2, 3, 16, 16)
    prediction = torch.ones(2, 3, 16, 16)
    top_left = torch.tensor([[0, 0], [1, 2]])  # grid 4 of 4-px cells, window 2x2 cells = 8x8 px
    assert window_sr_loss(prediction, target, top_left, 2, 4, "all").item() == pytest.approx(64 / 256)
    assert window_sr_loss(prediction, target, top_left, 2, 4, "window").item() == pytest.approx(1.0)
    outside = prediction.clone()
    outside[0, :, 8:, :] = 50.0
    outside[1, :, :4, :] = 50.0
    outside[1, :, :, :8] = 50.0
    assert window_sr_loss(outside, target, top_left, 2, 4, "all").item() == pytest.approx(64 / 256)
    inside = prediction.clone()
    inside[1, :, 4:12, 8:16] = 2.0
    assert window_sr_loss(inside, target, top_left, 2, 4, "all").item() > 0.3


def test_window_from_attention_known_answer():
    attention = torch.zeros(2, 16)  # 4x4 grid
    attention[0, 15] = 1.0  # bottom-right patch -> the 2x2 window starting at (2, 2)
    attention[1, 4] = 1.0  # row 1, col 0 -> windows (0,0) and (1,0) tie; the first in row-major order wins
    assert window_from_attention(attention, 2).tolist() == [[2, 2], [0, 0]]
    assert window_from_attention(attention, 4).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError):
        window_from_attention(attention, 5)


def test_attention_to_patch_grid_scatters_visible_patches():
    attention = torch.zeros(1, 2, 3, 2)  # (B, heads, T, visible)
    attention[0, :, 1, 1] = 1.0  # token 1 attends to the second visible patch
    grid = attention_to_patch_grid(attention, torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[5, 9]]), 16)
    expected = torch.zeros(1, 16)
    expected[0, 9] = 1.0
    assert torch.equal(grid, expected)


def test_text_encoder_equals_plain_bert(tiny):
    _, ids, mask = inputs()
    ours = tiny.text.encode(ids, mask)
    bert = tiny.text.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, bert, rtol=0, atol=1e-6)


def test_fusion_attends_only_to_visible_patches(tiny):
    image, ids, mask = inputs(b=1)
    noise = torch.rand(1, 64, generator=torch.Generator().manual_seed(3))
    out = tiny(image, ids, mask, noise=noise)
    assert out.cross_attention.shape == (1, 4, 16, 16)  # 16 visible of 64 patches
    torch.testing.assert_close(out.cross_attention.sum(-1), torch.ones(1, 4, 16))
    # Change the masked patches of the encoder input: the MLM logits do not move. Change the visible
    # patches: they do.
    grid_mask = out.patch_mask.reshape(8, 8).bool()
    # Bicubic resizing mixes neighbouring patches, so edit the encoder input (8 px patches) directly.
    low = tiny.downsample(image)
    low_edited = low.clone()
    low_edited[..., grid_mask.repeat_interleave(8, 0).repeat_interleave(8, 1)] += 5.0
    tiny.downsample = lambda x: low_edited
    try:
        same = tiny(image, ids, mask, noise=noise).logits
        visible = low.clone()
        visible[..., (~grid_mask).repeat_interleave(8, 0).repeat_interleave(8, 1)] += 5.0
        tiny.downsample = lambda x: visible
        moved = tiny(image, ids, mask, noise=noise).logits
    finally:
        del tiny.downsample
    torch.testing.assert_close(same, out.logits)
    assert (moved - out.logits).abs().max() > 1e-3


def test_super_resolution_head_is_a_residual_on_the_upsampled_image():
    head = SuperResolutionHead(3, 2)
    torch.nn.init.zeros_(head.conv2.weight)
    torch.nn.init.zeros_(head.conv2.bias)
    x = torch.rand(1, 3, 8, 8)
    expected = F.relu(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    torch.testing.assert_close(head(x), expected)


def test_weighted_mlm_loss_known_answer():
    logits = torch.zeros(1, 2, 4)
    logits[0, 0, 1] = 2.0
    labels = torch.tensor([[1, 3]])
    weights = torch.tensor([[0.5, 2.0]])
    ce0 = -torch.log_softmax(logits[0, 0], 0)[1]
    ce1 = torch.log(torch.tensor(4.0))
    assert weighted_mlm_loss(logits, labels, weights).item() == pytest.approx(
        ((0.5 * ce0 + 2 * ce1) / 2).item()
    )
    masked = torch.tensor([[False, True]])
    assert weighted_mlm_loss(logits, labels, weights, masked, "masked").item() == pytest.approx(ce1.item())


def test_segmentation_loss_matches_torchvision_focal_and_a_hand_dice():
    from torchvision.ops import sigmoid_focal_loss

    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    reference = sigmoid_focal_loss(logits, target, alpha=-1, gamma=2.0, reduction="mean")
    torch.testing.assert_close(focal_loss(logits, target), reference)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    torch.testing.assert_close(dice_coefficient(logits, target), dice)
    torch.testing.assert_close(segmentation_loss(logits, target), 10 * reference - torch.log(dice))


def test_segmenter_restores_the_input_resolution():
    torch.manual_seed(0)
    seg = ViTSegmenter(create_encoder("tiny"), channels=(16, 8, 8, 8)).eval()
    out = seg(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()

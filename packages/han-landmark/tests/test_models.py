"""Known-answer tests of the HAN building blocks and configurations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from han_landmark.models import (
    CBAM,
    BiLevelRoutingAttention,
    ChannelAttention,
    ConvAttentionBlock,
    SpatialAttention,
    create_model,
    han_paper,
    han_tiny,
)
from medzoo.errors import MedzooDataError


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return han_paper(num_landmarks=19).eval()


def test_bra_equals_multihead_attention_when_routing_to_all_regions_without_pooling():
    torch.manual_seed(0)
    dim, heads, n_win = 16, 4, 2
    bra = BiLevelRoutingAttention(
        dim,
        num_heads=heads,
        n_win=n_win,
        topk=n_win**2,
        kv_per_win=None,
        side_dwconv=0,
        qk_scale=(dim // heads) ** -0.5,
    )
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(bra.qkv.weight)  # both are [q | k | v] rows
        mha.in_proj_bias.copy_(bra.qkv.bias)
        mha.out_proj.weight.copy_(bra.proj.weight)
        mha.out_proj.bias.copy_(bra.proj.bias)
    x = torch.randn(2, 6, 8, dim)
    tokens = x.flatten(1, 2)
    expected = mha(tokens, tokens, tokens, need_weights=False)[0].view_as(x)
    torch.testing.assert_close(bra(x), expected, atol=1e-5, rtol=1e-5)


def test_global_attention_equals_routing_to_every_region_including_lepe():
    torch.manual_seed(1)
    dim, heads = 12, 3
    routed = BiLevelRoutingAttention(dim, heads, n_win=3, topk=9, kv_per_win=None, qk_scale=0.3)
    dense = BiLevelRoutingAttention(dim, heads, n_win=3, topk=-2, qk_scale=0.3)
    dense.load_state_dict(routed.state_dict())
    x = torch.randn(1, 9, 6, dim)
    torch.testing.assert_close(routed(x), dense(x), atol=1e-5, rtol=1e-5)


def test_scale_follows_reference_quirk_by_default():
    routed = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=1)
    dense = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=-2)
    assert routed.scale == pytest.approx(64**-0.5)  # full width, as the reference code
    assert dense.scale == pytest.approx(32**-0.5)


def test_auto_pad_matches_manual_zero_padding_on_original_pixels():
    torch.manual_seed(2)
    bra = BiLevelRoutingAttention(8, num_heads=2, n_win=4, topk=3, kv_per_win=2)
    x = torch.randn(2, 13, 11, 8)
    padded = F.pad(x, (0, 0, 0, 12 - 11, 0, 16 - 13))  # next multiples of n_win
    manual = bra(padded)[:, :13, :11]
    torch.testing.assert_close(bra(x), manual, atol=1e-6, rtol=1e-6)
    bra.auto_pad = False
    with pytest.raises(ValueError, match="not divisible"):
        bra(x)


def test_routing_picks_the_planted_region():
    torch.manual_seed(3)
    dim = 4
    bra = BiLevelRoutingAttention(
        dim, num_heads=1, n_win=2, topk=1, kv_per_win=None, side_dwconv=0, qk_scale=1.0
    )
    eye = torch.eye(dim)
    swap01 = eye[[1, 0, 2, 3]]  # key channel 0 reads input channel 1
    with torch.no_grad():
        bra.qkv.weight.copy_(torch.cat([eye, swap01, eye]))
        bra.qkv.bias.zero_()
        bra.proj.weight.copy_(eye)
        bra.proj.bias.zero_()
    x = 0.1 * torch.randn(1, 4, 4, dim)
    x[0, :2, :2, 0] += 5.0  # region 0 (top-left) queries along channel 0
    x[0, 2:, 2:, 1] += 5.0  # region 3 (bottom-right) keys along channel 0
    out = bra(x)

    q = x[0, :2, :2].reshape(4, dim)
    kv = x[0, 2:, 2:].reshape(4, dim)
    k = kv @ swap01.T
    expected = ((q @ k.T).softmax(-1) @ kv).reshape(2, 2, dim)
    torch.testing.assert_close(out[0, :2, :2], expected, atol=1e-5, rtol=1e-5)
    # a wrong region would give a visibly different answer
    wrong_kv = x[0, :2, 2:].reshape(4, dim)
    wrong = ((q @ (wrong_kv @ swap01.T).T).softmax(-1) @ wrong_kv).reshape(2, 2, dim)
    assert not torch.allclose(out[0, :2, :2], wrong, atol=1e-2)


def test_route_returns_top_k_regions_in_affinity_order():
    bra = BiLevelRoutingAttention(2, num_heads=1, n_win=2, topk=2)
    q = torch.zeros(1, 4, 3, 2)
    q[0, 1, :, 0] = 1.0
    k = torch.zeros(1, 4, 3, 2)
    k[0, :, :, 0] = torch.tensor([0.5, -1.0, 3.0, 2.0])[:, None]
    assert bra.route(q, k)[0, 1].tolist() == [2, 3]


def test_bra_gradients_equal_multihead_attention_gradients():
    torch.manual_seed(4)
    dim, heads = 8, 2
    bra = BiLevelRoutingAttention(
        dim, num_heads=heads, n_win=2, topk=4, kv_per_win=None, side_dwconv=0, qk_scale=(dim // heads) ** -0.5
    )
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(bra.qkv.weight)
        mha.in_proj_bias.copy_(bra.qkv.bias)
        mha.out_proj.weight.copy_(bra.proj.weight)
        mha.out_proj.bias.copy_(bra.proj.bias)
    x = torch.randn(1, 4, 4, dim, requires_grad=True)
    weights = torch.randn(1, 4, 4, dim)
    (bra(x) * weights).sum().backward()
    grad_x, grad_qkv = x.grad.clone(), bra.qkv.weight.grad.clone()
    x.grad = None
    tokens = x.flatten(1, 2)
    (mha(tokens, tokens, tokens, need_weights=False)[0].view_as(x) * weights).sum().backward()
    # routing is detached, yet with every region routed the token attention carries the full gradient
    torch.testing.assert_close(grad_x, x.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad_qkv, mha.in_proj_weight.grad, atol=1e-5, rtol=1e-4)


def _attention_lepe_reference(x, qkv_weight, proj_weight, proj_bias, lepe_weight, lepe_bias, heads):
    """BiFormer's AttentionLePE semantics, written out: no q/k/v bias, head_dim**-0.5, LePE on the input x."""
    batch, height, width, channels = x.shape
    tokens = x.reshape(batch, height * width, channels)
    q, k, v = (tokens @ qkv_weight.T).reshape(batch, -1, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (channels // heads) ** -0.5).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(batch, height * width, channels)
    lepe = F.conv2d(x.permute(0, 3, 1, 2), lepe_weight, lepe_bias, padding=2, groups=channels)
    out = out + lepe.flatten(2).transpose(1, 2)
    return (out @ proj_weight.T + proj_bias).reshape(batch, height, width, channels)


def test_paper_stage5_attention_equals_reference_attention_lepe(paper_model):
    attn = paper_model.backbone.stages[4].transformer.attn
    assert attn.num_heads == 8 and attn.qkv.bias is None and attn.lepe_on == "input"
    torch.manual_seed(6)
    x = torch.randn(2, 3, 4, 1024)
    weights = (attn.qkv.weight, attn.proj.weight, attn.proj.bias, attn.lepe.weight, attn.lepe.bias)
    with torch.no_grad():
        expected = _attention_lepe_reference(x, *weights, heads=8)
        torch.testing.assert_close(attn(x), expected, atol=2e-5, rtol=1e-4)
        # the previous build (32 heads, LePE on V) computes a different function with the same weights
        notes = BiLevelRoutingAttention(1024, num_heads=32, n_win=8, topk=-2, qkv_bias=False)
        notes.load_state_dict(attn.state_dict())
        assert (notes(x) - expected).abs().max() > 1e-2


def test_cbam_and_cab_equal_their_formulas():
    torch.manual_seed(4)
    cbam = CBAM(32, reduction=16).eval()
    x = torch.randn(2, 32, 6, 5)
    mlp = cbam.channel.mlp
    channel = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    y = x * channel
    pooled = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)
    spatial = torch.sigmoid(F.conv2d(pooled, cbam.spatial.conv.weight, padding=3))
    torch.testing.assert_close(cbam(x), y * spatial)

    cab = ConvAttentionBlock(8, 16).eval()
    assert cab.shortcut.bias is None  # the reference's shortcut conv has no bias
    for bn in (cab.branch[1], cab.branch[4]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 8, 7, 7)
    conv1, bn1, _, conv2, bn2 = cab.branch
    h = F.relu(F.batch_norm(F.conv2d(x, conv1.weight, padding=1), bn1.running_mean, bn1.running_var,
                            bn1.weight, bn1.bias, eps=bn1.eps))  # fmt: skip
    h = F.batch_norm(F.conv2d(h, conv2.weight, padding=2, dilation=2), bn2.running_mean, bn2.running_var,
                     bn2.weight, bn2.bias, eps=bn2.eps)  # fmt: skip
    expected = F.relu(cab.cbam(h) + F.conv2d(x, cab.shortcut.weight, padding=1))
    torch.testing.assert_close(cab(x), expected)


def test_channel_gate_picks_the_planted_channel():
    gate = ChannelAttention(4, reduction=1)
    with torch.no_grad():
        for conv in (gate.mlp[0], gate.mlp[2]):
            conv.weight.copy_(torch.eye(4)[:, :, None, None])
    x = torch.zeros(1, 4, 3, 3)
    x[0, 2] = 1.0
    x[0, 2, 1, 1] = 4.0  # mean 4/3 ... max 4 on the planted channel
    avg = x.mean(dim=(2, 3)).clamp(min=0)
    peak = x.amax(dim=(2, 3)).clamp(min=0)
    expected = torch.sigmoid(avg + peak)[..., None, None]
    torch.testing.assert_close(gate.gate(x), expected)
    assert gate.gate(x).flatten().argmax() == 2
    torch.testing.assert_close(gate(x), x * expected)


def test_spatial_gate_with_centre_tap_on_channel_max():
    gate = SpatialAttention(7)
    with torch.no_grad():
        gate.conv.weight.zero_()
        gate.conv.weight[0, 1, 3, 3] = 1.0  # centre tap on the channel-max map
    x = torch.zeros(1, 3, 6, 6)
    x[0, 1, 4, 2] = 2.5
    out = gate.gate(x)
    expected = torch.full((1, 1, 6, 6), 0.5)
    expected[0, 0, 4, 2] = torch.sigmoid(torch.tensor(2.5))
    torch.testing.assert_close(out, expected)


def test_paper_configuration_matches_the_released_code(paper_model):
    stages = paper_model.backbone.stages
    # the patch embedding is a bare conv: the reference builds a norm layer but never applies it
    assert all(isinstance(s.patch_embed, nn.Conv2d) for s in stages)
    assert [s.patch_embed.out_channels for s in stages] == [64, 128, 320, 512, 1024]
    attn = [s.transformer.attn for s in stages]
    assert [a.num_heads for a in attn] == [2, 4, 10, 16, 8]
    assert [a.n_win for a in attn] == [16, 16, 16, 8, 8]
    assert [a.topk for a in attn] == [1, 4, 8, 16, -2]
    assert [a.lepe_on for a in attn] == ["value"] * 4 + ["input"]
    assert [a.qkv.bias is not None for a in attn] == [True] * 4 + [False]
    assert all(a.kv_per_win == 4 and a.lepe.kernel_size == (5, 5) for a in attn)
    assert all(s.cab.shortcut.bias is None for s in stages)
    ratios = [s.transformer.mlp[0].out_features // s.transformer.mlp[0].in_features for s in stages]
    assert ratios == [8, 8, 8, 4, 4]
    assert [conv.out_channels for conv in paper_model.neck.lateral] == [256] * 4
    assert [conv.in_channels for conv in paper_model.neck.lateral] == [128, 320, 512, 1024]
    ffcm = paper_model.head_full
    assert ffcm.image_downsample == "nearest" and ffcm.align_corners is True


def test_ffcm_resampling_equals_the_reference_operations():
    torch.manual_seed(7)
    ffcm = han_tiny(num_landmarks=2).head_full.eval()
    for conv in (ffcm.fuse[0], ffcm.fuse[2]):
        nn.init.normal_(conv.weight, std=0.2)  # visible outputs (the 0.001 init makes them ~1e-5)
    feature, heat, image = torch.randn(1, 32, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 3, 12, 16)
    with torch.no_grad():
        half = F.interpolate(image, scale_factor=0.5)  # the reference: default mode, i.e. nearest
        fused = ffcm.fuse(torch.cat([feature, ffcm.image_embed(half), heat], 1))
        expected = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)(fused)
        torch.testing.assert_close(ffcm(feature, heat, image), expected)
        ffcm.align_corners = False
        assert (ffcm(feature, heat, image) - expected).abs().max() > 1e-2 * expected.abs().max()


def test_reference_init_statistics(paper_model):
    model = paper_model
    head_convs = [m for m in model.head_half.modules() if isinstance(m, nn.Conv2d)] + [model.deconv[0]]
    for conv in head_convs:  # every head conv and the deconv: normal(0, 0.001)
        assert conv.weight.std().item() == pytest.approx(0.001, rel=0.05)
    for conv in model.neck.lateral:  # Xavier uniform: bound sqrt(6 / (fan_in + fan_out))
        fan_in, fan_out = conv.in_channels * 9, conv.out_channels * 9
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert 0.95 * bound < conv.weight.abs().max().item() <= bound * (1 + 1e-6)
    # depthwise 3x3 position embeddings: fan_out = 3*3*C/groups = 9 (PyTorch's default would give ~0.19)
    dw = torch.cat([s.transformer.pos_embed.weight.flatten() for s in model.backbone.stages])
    assert dw.std().item() == pytest.approx((2 / 9) ** 0.5, rel=0.03)
    kaiming = create_model("tiny", init="kaiming")  # the 0.2 init: Kaiming, only the last conv at 0.001
    assert kaiming.head_half[0].weight.std().item() > 0.01
    assert kaiming.head_half[2].weight.std().item() == pytest.approx(0.001, rel=0.2)


def test_ffcm_input_width_is_288_plus_k(paper_model):
    assert paper_model.head_full.in_channels == 288 + 19
    # the width follows K and the configured channels (tiny: neck 32 + image 8 + K)
    assert han_tiny(num_landmarks=7).head_full.in_channels == 32 + 8 + 7


def test_paper_model_output_resolutions(paper_model):
    with torch.no_grad():
        quarter, half, full = paper_model(torch.randn(1, 3, 64, 96))
    assert quarter.shape == (1, 19, 16, 24)
    assert half.shape == (1, 19, 32, 48)
    assert full.shape == (1, 19, 64, 96)


def test_tiny_model_handles_sizes_not_divisible_by_32():
    model = han_tiny(num_landmarks=3).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 72, 100))
    assert [tuple(o.shape[-2:]) for o in outs] == [(18, 25), (36, 50), (72, 100)]


def test_unknown_configuration_is_a_clear_error():
    with pytest.raises(MedzooDataError, match=r"'huge'.*one of paper, paper_notes, tiny"):
        create_model("huge", num_landmarks=5)
    with pytest.raises(MedzooDataError, match=r"unknown settings.*depth"):
        create_model("tiny", depth=3)

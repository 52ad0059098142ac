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


def test_bra_gradients_reach_queries_and_keys_through_token_attention():
    bra = BiLevelRoutingAttention(8, num_heads=2, n_win=2, topk=2)
    x = torch.randn(1, 4, 4, 8, requires_grad=True)
    bra(x).sum().backward()
    assert bra.qkv.weight.grad[:16].abs().sum() > 0  # q and k rows
    assert torch.isfinite(x.grad).all()


def test_cbam_and_cab_map_zero_input_to_known_values():
    torch.manual_seed(4)
    assert CBAM(32).eval()(torch.zeros(1, 32, 8, 8)).abs().max() == 0
    cab = ConvAttentionBlock(8, 16).eval()
    with torch.no_grad():
        cab.shortcut.bias.copy_(torch.linspace(-1, 1, 16))
    out = cab(torch.zeros(1, 8, 5, 5))
    expected = torch.linspace(-1, 1, 16).clamp(min=0)[None, :, None, None].expand(1, 16, 5, 5)
    torch.testing.assert_close(out, expected)


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


def test_cab_with_silenced_branch_is_relu_of_shortcut_conv():
    torch.manual_seed(5)
    cab = ConvAttentionBlock(4, 6).eval()
    with torch.no_grad():
        cab.branch[4].weight.zero_()
        cab.branch[4].bias.zero_()
    x = torch.randn(2, 4, 7, 7)
    expected = F.conv2d(x, cab.shortcut.weight, cab.shortcut.bias, padding=1).relu()
    torch.testing.assert_close(cab(x), expected)


def test_paper_configuration_matches_the_notes(paper_model):
    stages = paper_model.backbone.stages
    assert [s.patch_embed[0].out_channels for s in stages] == [64, 128, 320, 512, 1024]
    attn = [s.transformer.attn for s in stages]
    assert [a.num_heads for a in attn] == [2, 4, 10, 16, 32]
    assert [a.n_win for a in attn] == [16, 16, 16, 8, 8]
    assert [a.topk for a in attn] == [1, 4, 8, 16, -2]
    assert all(a.kv_per_win == 4 and a.lepe.kernel_size == (5, 5) for a in attn)
    assert [s.transformer.mlp[0].out_features // s.transformer.mlp[0].in_features for s in stages] == [
        8,
        8,
        8,
        4,
        4,
    ]
    assert [conv.out_channels for conv in paper_model.neck.lateral] == [256] * 4
    assert [conv.in_channels for conv in paper_model.neck.lateral] == [128, 320, 512, 1024]


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
    with pytest.raises(MedzooDataError, match=r"'huge'.*one of paper, tiny"):
        create_model("huge", num_landmarks=5)
    with pytest.raises(MedzooDataError, match=r"unknown settings.*depth"):
        create_model("tiny", depth=3)

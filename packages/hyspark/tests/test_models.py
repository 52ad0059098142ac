"""Known-answer tests of the HySparK networks: masking, backends, token counts, loss."""

import pytest
import torch

from hyspark.models import (
    HySparK,
    convert_reference_state_dict,
    create_encoder,
    create_hyspark,
    create_segmenter,
    masked_patch_mse,
    patchify,
    spconv_available,
    unpatchify,
)
from hyspark.models.encoder import MedNeXtBlock, upsample_cells
from hyspark.models.hyspark import MatmulConvTranspose3d, PointwiseConv3d, normalize_patches
from hyspark.models.sparse import select_conv_algorithm

needs_spconv = pytest.mark.skipif(not spconv_available(), reason="spconv is not installed (hyspark[cuda])")

SIZE = 48  # a 3^3 token grid keeps random masks varied while staying fast
GRID = SIZE // 16


def _random_cells(batch: int, grid: int, keep: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(batch, grid**3, generator=g).argsort(1)
    cells = torch.zeros(batch, grid**3, dtype=torch.bool).scatter_(1, order[:, :keep], True)
    return cells.view(batch, 1, grid, grid, grid)


def test_masked_voxels_do_not_leak_dense_bit_identical():
    model = create_hyspark("tiny", img_size=SIZE).eval()
    cells = _random_cells(2, GRID, 9, seed=1)
    x = torch.rand(2, 1, SIZE, SIZE, SIZE)
    visible = upsample_cells(cells, 16)
    x_changed = torch.where(visible, x, torch.randn_like(x) * 100)  # only masked voxels differ
    assert not torch.equal(x, x_changed)
    maps = model.encoder.forward_features(x, cells)
    maps_changed = model.encoder.forward_features(x_changed, cells)
    for level, (a, b) in enumerate(zip(maps, maps_changed, strict=True)):
        active = upsample_cells(cells, a.shape[-1] // GRID).expand_as(a)
        assert torch.equal(a[active], b[active]), f"level {level} leaks masked voxels"
    # The loss reads masked voxels as TARGETS, so leakage is checked through the encoder path: feeding
    # the changed volume as input but the original as target must give the same loss, bit for bit.
    out = model(x, cells)
    maps_in = model.encoder.forward_features(x_changed * visible, cells)
    rec = model.decoder(model.densify(maps_in, cells))
    assert torch.equal(masked_patch_mse(rec, x, cells, 16), out.loss)


@needs_spconv
def test_masked_voxels_do_not_leak_spconv():
    encoder = create_encoder("tiny", img_size=32, backend="spconv").eval()
    cells = _random_cells(2, 2, 3, seed=2)
    x = torch.rand(2, 1, 32, 32, 32)
    x_changed = torch.where(upsample_cells(cells, 16), x, torch.randn_like(x) * 100)
    for a, b in zip(encoder(x, cells), encoder(x_changed, cells), strict=True):
        active = upsample_cells(cells, a.shape[-1] // 2).expand_as(a)
        torch.testing.assert_close(a[active], b[active], rtol=1e-5, atol=1e-5)


@needs_spconv
@pytest.mark.parametrize(("size", "batch", "keep"), [(SIZE, 1, 9), (32, 2, 3)])
def test_backends_compute_the_same_function(size, batch, keep):
    encoder = create_encoder("tiny", img_size=size).double()
    cells = _random_cells(batch, size // 16, keep, seed=size + batch)
    x = torch.rand(batch, 1, size, size, size, dtype=torch.float64)
    weights = None
    results = {}
    for backend in ("dense", "spconv"):
        x_in = x.clone().requires_grad_(True)
        maps = encoder.forward_features(x_in, cells, backend=backend)
        if weights is None:
            weights = [torch.randn_like(m) for m in maps]
        objective = sum((m * w).sum() for m, w in zip(maps, weights, strict=True))
        grads = torch.autograd.grad(objective, [x_in, *encoder.parameters()])
        results[backend] = (maps, grads)
    for a, b in zip(results["dense"][0], results["spconv"][0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    names = ["input", *(n for n, _ in encoder.named_parameters())]
    for name, ga, gb in zip(names, results["dense"][1], results["spconv"][1], strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-9, msg=f"gradient of {name} differs")
    assert results["dense"][1][0].abs().sum() > 0  # the check is not vacuous


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_vit_encodes_exactly_the_kept_tokens_per_sample(batch):
    model = create_hyspark("tiny", img_size=SIZE, mask_ratio=0.75)
    cells = model.generate_mask(batch, generator=torch.Generator().manual_seed(batch))
    assert model.num_keep == round(GRID**3 * 0.25)
    if batch > 1:
        assert not torch.equal(cells[0], cells[1])  # different masks per sample
    seen = []
    hook = model.encoder.vit.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.rand(batch, 1, SIZE, SIZE, SIZE)
    maps = model.encoder.forward_features(x, cells)
    hook.remove()
    assert seen[0].shape[:2] == (batch, model.num_keep)
    # Per-sample independence: each sample's ViT output equals running that sample alone.
    for b in range(batch):
        alone = model.encoder.forward_features(x[b : b + 1], cells[b : b + 1])[-1]
        torch.testing.assert_close(maps[-1][b : b + 1], alone, rtol=1e-5, atol=1e-5)


def test_vit_rejects_unequal_kept_counts():
    encoder = create_encoder("tiny", img_size=SIZE)
    cells = _random_cells(2, GRID, 9, seed=3)
    cells[1, 0, 0, 0, 0] = ~cells[1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="same number of cells"):
        encoder(torch.rand(2, 1, SIZE, SIZE, SIZE), cells)


def test_loss_only_on_masked_patches():
    cells = _random_cells(2, 2, 3, seed=4)
    target = torch.rand(2, 1, 32, 32, 32)
    prediction = torch.randn(2, 1, 32, 32, 32)
    corrupted = torch.where(upsample_cells(cells, 16), torch.full_like(prediction, 1e6), prediction)
    loss = masked_patch_mse(prediction, target, cells, 16)
    assert torch.equal(loss, masked_patch_mse(corrupted, target, cells, 16))
    # ...while corrupting one masked patch does change it.
    masked_only = torch.where(~upsample_cells(cells, 16), prediction + 1, prediction)
    assert masked_patch_mse(masked_only, target, cells, 16) != loss


def test_per_patch_normalisation_known_answer():
    # One 2^3 patch holding 0..7: mean 3.5, unbiased variance 6 -> target (v - 3.5) / sqrt(6 + eps).
    volume = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    normalised, mean, std = normalize_patches(patchify(volume, 2), eps=0.0)
    assert mean.item() == 3.5
    assert std.item() == pytest.approx(6**0.5)
    expected = (torch.arange(8.0) - 3.5) / 6**0.5
    torch.testing.assert_close(normalised.flatten(), expected)
    # Predicting the normalised target exactly gives zero loss; predicting zeros gives mean(t^2) = 7/8.
    cells = torch.zeros(1, 1, 1, 1, 1, dtype=torch.bool)
    perfect = unpatchify(normalise_eps0(volume), 2, (1, 1, 1))
    assert masked_patch_mse(perfect, volume, cells, 2).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_patch_mse(torch.zeros_like(volume), volume, cells, 2).item() == pytest.approx(
        7 / 8, rel=1e-5
    )


def normalise_eps0(volume):
    return normalize_patches(patchify(volume, 2), eps=1e-6)[0]


def test_patchify_round_trip_and_order():
    volume = torch.randn(2, 1, 32, 64, 48)
    patches = patchify(volume, 16)
    assert patches.shape == (2, 2 * 4 * 3, 16**3)
    torch.testing.assert_close(patches[1, 4 * 3 + 2], volume[1, 0, 16:32, 0:16, 32:48].flatten())
    torch.testing.assert_close(unpatchify(patches, 16, (2, 4, 3)), volume)


def test_mask_generator_keeps_exact_count():
    model = create_hyspark("tiny", img_size=64, mask_ratio=0.9)
    cells = model.generate_mask(4)
    assert cells.shape == (4, 1, 4, 4, 4)
    assert cells.flatten(1).sum(1).tolist() == [round(64 * 0.1)] * 4


def test_paper_config_shapes_and_size():
    model = create_hyspark("paper")
    encoder = model.encoder
    assert [len(s) for s in encoder.stages] == [1, 1, 3, 3, 1]
    assert encoder.feature_channels == [64, 128, 256, 384, 384]
    assert encoder.vit.pos_embed.shape == (1, 216, 384)
    assert len(encoder.vit.blocks) == 3 and encoder.vit.blocks[0].attn.num_heads == 12
    assert model.num_keep == 54
    assert [p.out_channels for p in model.densify_projs] == [768, 384, 192, 96]
    assert [p.kernel_size for p in model.densify_projs] == [(1, 1, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3)]
    assert [e.expand.out_channels // e.expand.in_channels for s in encoder.stages for e in s] == [
        2, 4, 4, 4, 4, 4, 4, 4, 2,
    ]  # fmt: skip


def test_segmenter_loads_pretrained_encoder_known_answer():
    # Known weights: every stem tap 0.5, bias 0.25. On an all-ones volume an interior voxel of the stem's
    # output is 27 * 0.5 + 0.25 = 13.75, a corner (8 of 27 taps inside) 8 * 0.5 + 0.25 = 4.25.
    pretrain = create_hyspark("tiny")
    state = pretrain.encoder.state_dict()
    state["stem.weight"] = torch.full_like(state["stem.weight"], 0.5)
    state["stem.bias"] = torch.full_like(state["stem.bias"], 0.25)
    segmenter = create_segmenter("tiny", num_classes=3)
    segmenter.encoder.load_state_dict(state, strict=True)
    stem_out = segmenter.encoder.stem(torch.ones(1, 1, 32, 32, 32))
    assert stem_out[0, :, 5, 6, 7].tolist() == [13.75] * 8
    assert stem_out[0, :, 0, 0, 0].tolist() == [4.25] * 8


def test_reference_encoder_keys_each_map_and_load_strictly(reference_keys, reference_state):
    rows = reference_keys
    assert len(rows) == 122
    encoder = create_encoder("paper")
    converted = convert_reference_state_dict(reference_state("sparse_encoder."))
    # Every reference key but the fixed sin-cos table maps to its own key of ours, and loads strictly
    # (same names, same shapes).
    assert len(converted) == 121 == len(encoder.state_dict())
    encoder.load_state_dict(converted, strict=True)
    ours = encoder.state_dict()
    # Each of our tensors holds one reference tensor whole, and together they hold all but mae.pos_embed.
    assert all(bool((v == v.flatten()[0]).all()) for v in ours.values())
    held = sorted(int(v.flatten()[0]) for v in ours.values())
    assert held == [i for i, (key, _) in enumerate(rows) if key != "mae.pos_embed"]
    # Known pairs of the mapping.
    expected = {
        "embeddings.stem.weight": "stem.weight",
        "embeddings.layer3.2.conv1.weight": "stages.2.2.depthwise.weight",
        "embeddings.layer4.1.norm.bias": "stages.3.1.norm.bias",
        "embeddings.layer5.0.conv2.weight": "stages.4.0.expand.weight",
        "embeddings.layer1.0.conv3.bias": "stages.0.0.compress.bias",
        "embeddings.expend4.weight": "widen.3.weight",
        "mae.mask_token": "vit.mask_token",
        "mae.blocks.2.attn.qkv.weight": "vit.blocks.2.attn.qkv.weight",
        "mae.norm.weight": "vit.norm.weight",
    }
    index = {k: i for i, (k, _) in enumerate(rows)}
    for reference_key, our_key in expected.items():
        assert bool((ours[our_key] == index[reference_key]).all()), reference_key


def test_position_embedding_known_answer():
    # The reference's fixed table (mae.pos_embed, dropped on load): channels [sin h, cos h, sin w, cos w,
    # sin d, cos d], 64 each at dim 384, omega_k = 10000^(-k/64). Token 1 of the 6^3 grid is (h, w, d) =
    # (0, 0, 1); token 6 is (0, 1, 0).
    table = create_encoder("paper").vit.pos_embed[0]
    omega = 1.0 / 10000 ** (torch.arange(64) / 64)
    zeros, ones = torch.zeros(64), torch.ones(64)
    expected_1 = torch.cat([zeros, ones, zeros, ones, omega.sin(), omega.cos()])
    expected_6 = torch.cat([zeros, ones, omega.sin(), omega.cos(), zeros, ones])
    torch.testing.assert_close(table[1], expected_1)
    torch.testing.assert_close(table[6], expected_6)


def test_vit_heads_follow_img_size_as_the_reference():
    assert create_encoder("paper").vit.blocks[0].attn.num_heads == 96 // 8
    assert create_encoder("paper", img_size=64).vit.blocks[0].attn.num_heads == 64 // 8
    assert create_encoder("tiny", img_size=48).vit.blocks[0].attn.num_heads == 48 // 8


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    model = create_hyspark("paper")
    # Encoder convolutions keep PyTorch's default: uniform within 1/sqrt(fan_in), std bound/sqrt(3).
    widen = model.encoder.widen[2].weight  # (256, 128, 3, 3, 3)
    bound = 1 / (128 * 27) ** 0.5
    assert widen.abs().max() <= bound
    assert widen.std().item() == pytest.approx(bound / 3**0.5, rel=0.02)
    # Decoder transposed convolutions: kaiming normal, fan_out = weight.size(0) * 8 -> std sqrt(2 / fan_out).
    up = model.decoder.up[1][0].weight  # (384, 384, 2, 2, 2)
    assert up.std().item() == pytest.approx((2 / (384 * 8)) ** 0.5, rel=0.02)
    # Decoder convolutions: truncated normal, std .02 (within +-2, i.e. never beyond |w| = 2).
    conv = model.decoder.up[1][1][0].weight
    assert conv.std().item() == pytest.approx(0.02, rel=0.02)
    assert float(model.decoder.up[1][1][0].bias.detach().abs().max()) == 0.0
    # Densify projections: PyTorch's default (uniform within 1/sqrt(fan_in)).
    proj = model.densify_projs[1].weight  # (384, 384, 3, 3, 3)
    assert proj.std().item() == pytest.approx(1 / (384 * 27) ** 0.5 / 3**0.5, rel=0.02)
    # Mask tokens: truncated normal within +-.02.
    assert all(float(t.abs().max()) <= 0.02 for t in model.mask_tokens)


@pytest.mark.parametrize(
    ("device", "requested", "expected"),
    [("cpu", "auto", "native"), ("cuda", "auto", "implicit_gemm"), ("cuda", "native", "native"),
     ("cuda:1", "implicit_gemm", "implicit_gemm"), ("cpu", "native", "native")],
)  # fmt: skip
def test_spconv_algorithm_switch(device, requested, expected):
    assert select_conv_algorithm(torch.device(device), requested) == expected


def test_spconv_algorithm_switch_rejects_bad_choices():
    with pytest.raises(ValueError, match="needs CUDA"):
        select_conv_algorithm("cpu", "implicit_gemm")
    with pytest.raises(ValueError, match="spconv_algorithm must be one of"):
        create_encoder("tiny", spconv_algorithm="fast")


@needs_spconv
def test_spconv_backend_on_cpu_runs_native_and_frees_rulebooks(monkeypatch):
    from hyspark.models import sparse

    scales = []
    original = sparse.active_sites
    monkeypatch.setattr(sparse, "active_sites", lambda *a: scales.append(original(*a)) or scales[-1])
    built = []  # per call: whether the rulebook had to be built
    original_rulebook = sparse.SparseScale.subm_rulebook
    monkeypatch.setattr(
        sparse.SparseScale,
        "subm_rulebook",
        lambda self: built.append(self._subm_rulebook is None) or original_rulebook(self),
    )
    encoder = create_encoder("tiny", backend="spconv")
    cells = _random_cells(1, 2, 2, seed=5)
    encoder(torch.rand(1, 1, 32, 32, 32), cells)
    assert scales[0].algorithm == "native"
    assert scales[0]._subm_rulebook is None  # released after the stage
    # One rulebook per scale (5 scales), built once and reused by all the layers of its stage.
    assert sum(built) == 5 and len(built) > 5


def test_hyspark_is_deterministic_given_mask_and_seed():
    torch.manual_seed(3)
    a = create_hyspark("tiny")
    torch.manual_seed(3)
    b = create_hyspark("tiny")
    x = torch.rand(2, 1, 32, 32, 32)
    cells = a.generate_mask(2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a(x, cells).loss, b(x, cells).loss)
    assert isinstance(a, HySparK)


def test_package_works_without_spconv(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "spconv", None)  # makes `import spconv...` raise ImportError
    monkeypatch.setitem(sys.modules, "spconv.pytorch", None)
    spconv_available.cache_clear()
    assert not spconv_available()
    spconv_available.cache_clear()
    encoder = create_encoder("tiny")
    cells = torch.ones(1, 1, 2, 2, 2, dtype=torch.bool)
    assert encoder(torch.rand(1, 1, 32, 32, 32), cells)[-1].shape == (1, 48, 2, 2, 2)  # dense still runs
    with pytest.raises(ImportError, match=r"hyspark\[cuda\]"):
        encoder.forward_features(torch.rand(1, 1, 32, 32, 32), cells, backend="spconv")


def test_channels_last_decoder_computes_the_same_function():
    torch.manual_seed(0)
    default_format = create_hyspark("tiny", channels_last_decoder=False).eval()
    channels_last = create_hyspark("tiny").eval()
    channels_last.load_state_dict(default_format.state_dict(), strict=True)
    conv = channels_last.decoder.up[0][1][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    x = torch.rand(2, 1, 32, 32, 32)
    cells = channels_last.generate_mask(2, generator=torch.Generator().manual_seed(1))
    a, b = default_format(x, cells), channels_last(x, cells)
    torch.testing.assert_close(b.reconstruction, a.reconstruction, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_matmul_transposed_convolution_equals_conv_transpose3d(channels_last, bias):
    torch.manual_seed(0)
    plain = torch.nn.ConvTranspose3d(6, 5, 2, stride=2, bias=bias).double()
    fast = MatmulConvTranspose3d(6, 5).double()
    if not bias:
        fast.bias = None
    fast.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 6, 3, 4, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x_plain, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = plain(x_plain), fast(x_fast)
    assert b.shape == a.shape == (2, 5, 6, 8, 10)
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(a)
    a.backward(grad)
    b.backward(grad)
    torch.testing.assert_close(x_fast.grad, x_plain.grad, rtol=1e-12, atol=1e-12)
    for p, q in zip(plain.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-12)


def test_pointwise_head_equals_conv3d():
    torch.manual_seed(0)
    plain = torch.nn.Conv3d(7, 1, 1).double()
    fast = PointwiseConv3d(7, 1).double()
    fast.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 7, 4, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    x_plain, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = plain(x_plain), fast(x_fast)
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(a)
    a.backward(grad)
    b.backward(grad)
    torch.testing.assert_close(x_fast.grad, x_plain.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last_decoder", [False, True])
def test_matmul_decoder_computes_the_same_step(channels_last_decoder):
    """The whole pre-training step, forward and every gradient, against the plain ``nn`` decoder."""
    torch.manual_seed(0)
    plain = create_hyspark("tiny", channels_last_decoder=channels_last_decoder, matmul_decoder=False).double()
    fast = create_hyspark("tiny", channels_last_decoder=channels_last_decoder).double()
    assert isinstance(fast.decoder.up[0][0], MatmulConvTranspose3d) and fast.decoder.up[0][0].matmul
    assert list(fast.state_dict()) == list(plain.state_dict())  # the same keys: checkpoints load either way
    fast.load_state_dict(plain.state_dict(), strict=True)
    x = torch.rand(2, 1, 32, 32, 32, dtype=torch.float64)
    cells = plain.generate_mask(2, generator=torch.Generator().manual_seed(1))
    a, b = plain(x, cells), fast(x, cells)
    torch.testing.assert_close(b.reconstruction, a.reconstruction, rtol=1e-10, atol=1e-12)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("masked", [False, True])
def test_mednext_block_equals_its_modules_composed(masked):
    """The dense block's per-voxel path (norm and 1x1 convolutions as matrix products on the channels-last
    view) against the plain composition of its own modules, forward and gradients."""
    torch.manual_seed(0)
    block = MedNeXtBlock(6, expansion=3).double()
    x = torch.randn(2, 6, 5, 6, 7, dtype=torch.float64)
    mask = (torch.rand(2, 1, 5, 6, 7) > 0.5).double() if masked else None

    def composed(inp):
        y = inp + block.compress(block.act(block.expand(block.norm(block.depthwise(inp)))))
        return y if mask is None else y * mask

    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = composed(x_ref)
    grads_ref = torch.autograd.grad(a, [x_ref, *block.parameters()], torch.ones_like(a) * 0.3 + a.detach())
    b = block(x_fast, mask)
    grads = torch.autograd.grad(b, [x_fast, *block.parameters()], torch.ones_like(b) * 0.3 + b.detach())
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)

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
from hyspark.models.encoder import upsample_cells
from hyspark.models.hyspark import normalize_patches

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


def test_segmenter_loads_pretrained_encoder_by_name():
    pretrain = create_hyspark("tiny")
    segmenter = create_segmenter("tiny", num_classes=3)
    segmenter.encoder.load_state_dict(pretrain.encoder.state_dict())
    for name, tensor in pretrain.encoder.state_dict().items():
        assert torch.equal(segmenter.encoder.state_dict()[name], tensor), name
    logits = segmenter(torch.rand(1, 1, 32, 32, 32))
    assert logits.shape == (1, 3, 32, 32, 32)


def test_reference_key_layout_is_converted():
    encoder = create_encoder("tiny")
    ours = {k: v.clone() for k, v in encoder.state_dict().items()}
    to_reference = {
        "stem.": "embeddings.stem.",
        "vit.": "mae.",
    }
    reference = {}
    for key, value in ours.items():
        ref = key
        for a, b in to_reference.items():
            if ref.startswith(a):
                ref = b + ref[len(a) :]
        if key.startswith("stages."):
            _, stage, block, part, kind = key.split(".")
            part = {"depthwise": "conv1", "norm": "norm", "expand": "conv2", "compress": "conv3"}[part]
            ref = f"embeddings.layer{int(stage) + 1}.{block}.{part}.{kind}"
        if key.startswith("widen."):
            _, i, kind = key.split(".")
            ref = f"embeddings.expend{int(i) + 1}.{kind}"
        reference["module.sparse_encoder.sp_cnn." + ref] = value.clone() + 1
    reference["module.sparse_encoder.sp_cnn.mae.pos_embed"] = torch.zeros(1, 8, 48)
    reference["module.dense_decoder.proj.weight"] = torch.zeros(1)
    converted = convert_reference_state_dict(reference)
    assert set(converted) == set(ours)
    encoder.load_state_dict(converted)
    for key, value in ours.items():
        assert torch.equal(encoder.state_dict()[key], value + 1), key


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

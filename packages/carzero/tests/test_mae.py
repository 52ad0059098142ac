"""MAE pre-training (`carzero pretrain`): masking, the masked-patch loss, the timm-layout weights, the CLI."""

from __future__ import annotations

import pytest
import torch

from carzero.cli import main
from carzero.factory import create_image_encoder, load_vit_weights
from carzero.models import MaskedAutoencoder, masked_patch_loss, patchify, random_masking
from carzero.module import CARZeroModule, MAEPretrainModule
from medzoo.errors import MedzooWeightsError


def tiny_mae(**kwargs) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(create_image_encoder("tiny"), decoder_dim=16, decoder_depth=1, decoder_heads=2,
                             **kwargs)  # fmt: skip


def test_patchify_known_answer():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    patches = patchify(images, 2)  # 2x2 grid of 2x2 patches, pixels ordered (row, col, channel)
    assert patches.shape == (2, 4, 12)
    # patch 1 = top-right; its first pixel is (row 0, col 2), channels 0..2
    assert patches[0, 1, :3].tolist() == [images[0, c, 0, 2].item() for c in range(3)]
    # patch 2 = bottom-left; its last pixel is (row 3, col 1), channel 2
    assert patches[1, 2, -1].item() == images[1, 2, 3, 1].item()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(torch.zeros(1, 3, 5, 4), 2)


def test_random_masking_keeps_a_quarter_per_sample():
    keep, mask = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (3, 4) and mask.sum(dim=1).tolist() == [12.0, 12.0, 12.0]
    for row in range(3):  # the kept indices are exactly the unmasked patches
        assert sorted(keep[row].tolist()) == torch.nonzero(mask[row] == 0).flatten().tolist()
    assert not torch.equal(keep[0].sort().values, keep[1].sort().values)  # per-sample draws


def test_masked_patch_loss_known_answer_scores_masked_patches_only():
    target = torch.tensor([[[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]]])  # (1, 3 patches, 2 pixels)
    prediction = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [2.0, 4.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])  # patch 1 is visible: its error (25) must not count
    # patch 0: ((0-1)^2 + (0-3)^2)/2 = 5; patch 2: (0 + 4)/2 = 2; mean over the 2 masked patches = 3.5
    assert masked_patch_loss(prediction, target, mask, normalize_target=False).item() == pytest.approx(3.5)
    # normalised targets: patch 0 -> (-0.707, 0.707) (unbiased var 2), patch 2 (constant) -> (0, 0)
    normalised = masked_patch_loss(prediction, target, mask, normalize_target=True).item()
    expected = ((0 - (-1 / 2**0.5)) ** 2 + (0 - 1 / 2**0.5) ** 2) / 2 / 2 + (4 + 16) / 2 / 2
    assert normalised == pytest.approx(expected, rel=1e-5)


def test_mae_loss_ignores_visible_patches_and_encoder_never_sees_masked_ones():
    mae = tiny_mae().eval()
    images = torch.randn(2, 3, 32, 32)
    loss, prediction, mask = mae(images, generator=torch.Generator().manual_seed(3))
    target = patchify(images, 16)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (prediction - target).pow(2).mean(-1)
    assert loss.item() == pytest.approx((per_patch[mask == 1]).mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx(per_patch.mean().item(), rel=1e-3)
    # Changing the pixels of a masked patch changes neither the encoder's output nor the prediction of a
    # visible patch's neighbours through the encoder: the encoder only sees the kept patches.
    keep, mask = random_masking(2, 4, 0.75, generator=torch.Generator().manual_seed(5))
    masked_index = int(torch.nonzero(mask[0] == 1).flatten()[0])
    row, col = divmod(masked_index, 2)
    changed = images.clone()
    changed[0, :, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] += 10.0
    with torch.no_grad():
        torch.testing.assert_close(mae.forward_encoder(images, keep), mae.forward_encoder(changed, keep))
        kept_index = int(keep[0, 0])
        row, col = divmod(kept_index, 2)
        changed[0, :, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] += 10.0
        assert not torch.allclose(mae.forward_encoder(images, keep), mae.forward_encoder(changed, keep))


def test_mae_overfits_two_images():
    mae = tiny_mae(mask_ratio=0.5)
    images = torch.randn(2, 3, 32, 32)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    first = None
    for _ in range(120):
        loss, _, _ = mae(images, generator=generator)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = torch.stack([mae(images, generator=torch.Generator().manual_seed(s))[0] for s in range(8)])
    assert final.mean().item() < 0.3 * first


def test_pretrained_state_dict_loads_into_the_fit_model_with_every_vit_key(tiny_bert_dir, tmp_path):
    from medzoo.weights import save_weights

    pretrain = MAEPretrainModule("tiny")
    with torch.no_grad():
        for name, parameter in pretrain.mae.encoder.vit.named_parameters():
            if name != "pos_embed":  # the fixed sin-cos table is not learned
                parameter.add_(torch.randn_like(parameter))
    state = pretrain.vit_state_dict()
    path = save_weights(state, tmp_path / "vit.safetensors")
    assert set(state) == set(create_image_encoder("tiny").vit.state_dict())  # timm's layout, nothing else
    module = CARZeroModule("tiny", overrides={"text_model": str(tiny_bert_dir)}, vit_weights=str(path))
    loaded = module.model.image_encoder.vit.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    encoder = create_image_encoder("tiny")
    assert len(load_vit_weights(encoder, str(path))) == len(state) - 1  # all but the fixed sin-cos table
    # A ViT of another size, or a file with a missing key, is an error naming the keys.
    with pytest.raises(MedzooWeightsError, match="shape mismatches"):
        load_vit_weights(create_image_encoder("tiny", vit_dim=64, vit_heads=2), str(path))
    partial = save_weights({k: v for k, v in state.items() if k != "norm.weight"}, tmp_path / "p.safetensors")
    with pytest.raises(MedzooWeightsError, match=r"missing \['norm.weight'\]"):
        load_vit_weights(create_image_encoder("tiny"), str(partial))


def test_pretrain_cli_writes_weights_that_fit_loads(tiny_bert_dir, tmp_path, monkeypatch):
    from medzoo.weights import load_weights, read_weights_metadata

    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    small = ["--data.synthetic_images", "24", "--data.batch_size", "8", "--trainer.enable_progress_bar=false"]
    run = tmp_path / "pre"
    main(["pretrain", "--config", "pretrain_demo", "--model.variant", "tiny", "--data.resize", "37",
          "--data.crop", "32", "--trainer.max_epochs", "1", f"--trainer.default_root_dir={run}",
          *small])  # fmt: skip
    weights = run / "vit_weights.safetensors"
    assert read_weights_metadata(weights)["variant"] == "tiny"
    # The validation loss masks each image by its index: validating the best checkpoint gives the value
    # logged for that epoch (also what makes it equal under DDP). One epoch: the best is the last one.
    import pandas as pd

    logged = pd.read_csv(run / "csv" / "version_0" / "metrics.csv")["val/loss"].dropna()
    assert len(logged) == 1
    logged = logged.min()  # the monitor's best (mode min)
    main(["pretrain", "validate", "--config", "pretrain_demo", "--model.variant", "tiny", "--data.resize",
          "37", "--data.crop", "32", f"--trainer.default_root_dir={run}", "--ckpt_path", "best",
          *small])  # fmt: skip
    again = pd.read_csv(run / "csv" / "version_1" / "metrics.csv")["val/loss"].dropna().iloc[-1]
    assert again == pytest.approx(logged, rel=1e-5)
    fit_run = tmp_path / "fit"
    main(["fit", "--config", "demo", "--model.variant", "tiny", "--model.overrides",
          f'{{"text_model": "{tiny_bert_dir}"}}', f"--model.vit_weights={weights}", "--data.resize", "37",
          "--data.crop", "32", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
          f"--trainer.default_root_dir={fit_run}", *small])  # fmt: skip
    # Before any step the fit model's ViT equals the pre-trained one: check through the saved checkpoint
    # of a zero-learning-rate run instead of timing: the ViT moved by one step only, so it stays close.
    checkpoint = load_weights(fit_run / "checkpoints" / "last.ckpt")  # the newest state: after the one step
    saved = load_weights(weights)
    moved = max((checkpoint[f"model.image_encoder.vit.{k}"] - v).abs().max().item() for k, v in saved.items())
    fresh = create_image_encoder("tiny").vit.state_dict()
    distance_to_fresh = max((fresh[k] - v).abs().max().item() for k, v in saved.items() if k != "pos_embed")
    assert moved < 0.01 < distance_to_fresh

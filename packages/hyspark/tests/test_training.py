"""Training behaviour: overfitting, weight schedules, fine-tuning weight loading, CLI round trips."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from hyspark.cli import main
from hyspark.models import create_hyspark
from hyspark.module import HySparKPretrainModule, HySparKSegmentationModule, cosine_schedule
from medzoo.errors import MedzooDataError, MedzooWeightsError
from medzoo.weights import save_weights


def _overfit(steps: int) -> list[float]:
    torch.manual_seed(0)
    model = create_hyspark("tiny")
    axis = torch.linspace(0, 1, 32)
    # A smooth volume: a ramp along X plus a sine along Y whose amplitude grows along Z.
    volume = axis.view(1, 1, 32, 1, 1) + 0.5 * torch.sin(6.28 * axis).view(1, 1, 1, 32, 1) * axis.view(
        1, 1, 1, 1, 32
    )
    volume = volume.expand(1, 1, 32, 32, 32).contiguous()
    cells = model.generate_mask(1, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model(volume, cells).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_overfitting_one_volume_drives_the_loss_down():
    losses = _overfit(18)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_overfitting_one_volume_long():
    losses = _overfit(80)
    assert losses[-1] < 0.3 * losses[0], losses


def test_weight_decay_follows_a_cosine_from_start_to_end():
    assert cosine_schedule(0.04, 0.2, 0.0) == pytest.approx(0.04)
    assert cosine_schedule(0.04, 0.2, 0.5) == pytest.approx(0.12)
    assert cosine_schedule(0.04, 0.2, 1.0) == pytest.approx(0.2)
    assert cosine_schedule(0.04, 0.2, 0.25) == pytest.approx(0.2 - 0.16 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_backend_auto_is_dense_on_cpu():
    module = HySparKPretrainModule("tiny", backend="auto")
    assert module.model.encoder.resolve_backend(torch.zeros(1)) == "dense"
    assert module.model.encoder.resolve_backend(torch.zeros(1), "spconv") == "spconv"


def _assert_encoder_equal(segmentation, encoder_state):
    loaded = segmentation.model.encoder.state_dict()
    assert set(loaded) == set(encoder_state)
    for name, tensor in encoder_state.items():
        assert torch.equal(loaded[name], tensor), name


def test_finetuning_loads_pretrained_encoder_weights(tmp_path):
    pretrain = HySparKPretrainModule("tiny", backend="dense")
    encoder_state = {k: v.clone() for k, v in pretrain.model.encoder.state_dict().items()}
    fresh = HySparKSegmentationModule("tiny", num_classes=3)
    assert not torch.equal(fresh.model.encoder.stem.weight, encoder_state["stem.weight"])
    # 1) this package's exported weights (model.encoder.* keys)
    path = pretrain.export_weights(tmp_path / "pretrain.safetensors")
    _assert_encoder_equal(
        HySparKSegmentationModule("tiny", num_classes=3, pretrained=str(path)), encoder_state
    )
    # 2) the reference checkpoint layout (embeddings.* / mae.*), as a torch file
    reference = {}
    for key, value in encoder_state.items():
        parts = key.split(".")
        if parts[0] == "stem":
            ref = "embeddings." + key
        elif parts[0] == "widen":
            ref = f"embeddings.expend{int(parts[1]) + 1}.{parts[2]}"
        elif parts[0] == "stages":
            part = {"depthwise": "conv1", "norm": "norm", "expand": "conv2", "compress": "conv3"}[parts[3]]
            ref = f"embeddings.layer{int(parts[1]) + 1}.{parts[2]}.{part}.{parts[4]}"
        else:
            ref = "mae." + key[len("vit.") :]
        reference[ref] = value
    reference["mae.pos_embed"] = torch.zeros(1, 8, 48)
    torch.save(reference, tmp_path / "reference.pth")
    _assert_encoder_equal(
        HySparKSegmentationModule("tiny", num_classes=3, pretrained=str(tmp_path / "reference.pth")),
        encoder_state,
    )
    # 3) a mismatching encoder is a clear error
    save_weights({"model.encoder.stem.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(MedzooWeightsError, match="missing"):
        HySparKSegmentationModule("tiny", num_classes=3, pretrained=str(tmp_path / "bad.safetensors"))


@pytest.fixture
def demo_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hyspark-cache"
    monkeypatch.setenv("MEDZOO_CACHE", str(cache))
    return cache


def test_cli_round_trip_pretrain_then_finetune(tmp_path, demo_cache):
    pre_root, ft_root = tmp_path / "pretrain", tmp_path / "finetune"
    common = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
    ]
    main(["fit", "--config", "demo", f"--trainer.default_root_dir={pre_root}", *common])
    last = pre_root / "checkpoints" / "last.ckpt"
    assert last.is_file() and (demo_cache / "hyspark" / "synthetic-ct-6-0" / "dataset.json").is_file()

    main(["predict", "--config", "demo", f"--trainer.default_root_dir={pre_root}", "--ckpt_path=last"])
    (png,) = (pre_root / "predictions").glob("*_reconstruction.png")
    panels = np.asarray(Image.open(png))
    assert panels.dtype == np.uint8 and panels.shape == (32, 96)  # input | masked | reconstruction
    masked = panels[:, 32:64]
    assert panels[:, :32].std() > 0 and (masked == 0).mean() > 0.5  # 75 % of the cells are blanked

    cli = main(
        ["finetune", "fit", "--config", "finetune_demo", f"--trainer.default_root_dir={ft_root}",
         f"--model.pretrained={last}", *common]
    )  # fmt: skip
    assert cli.model.model.encoder.stem.weight.shape == (8, 1, 3, 3, 3)
    ft_last = ft_root / "checkpoints" / "last.ckpt"
    main(["finetune", "predict", "--config", "finetune_demo", f"--trainer.default_root_dir={ft_root}",
          f"--ckpt_path={ft_last}"])  # fmt: skip
    (mask_path,) = (ft_root / "predictions").glob("*_seg.nii.gz")
    case = mask_path.name.replace("_seg.nii.gz", ".nii.gz")
    source = nib.load(str(demo_cache / "hyspark" / "synthetic-ct-6-0" / "imagesTr" / case))
    mask = nib.load(str(mask_path))
    assert mask.shape == source.shape  # the input's own voxel grid...
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)  # ...and geometry
    labels = np.asarray(mask.dataobj)
    assert labels.dtype == np.uint8 and labels.max() < 5
    # summary.csv: each organ's volume is its voxel count times the voxel volume of the written mask.
    import pandas as pd

    summary = pd.read_csv(ft_root / "predictions" / "summary.csv").set_index("mask")
    voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000.0
    for c in range(1, 5):
        assert summary.loc[mask_path.name, f"volume_ml_{c}"] == pytest.approx((labels == c).sum() * voxel_ml)
    pre_summary = pd.read_csv(pre_root / "predictions" / "summary.csv")
    assert len(pre_summary) == len(list((pre_root / "predictions").glob("*_reconstruction.png")))
    assert (pre_summary["masked_mse"] > 0).all()

    # finetune test needs a labelled test set; with one, test/dice is logged (here: the demo set itself).
    with pytest.raises(MedzooDataError, match="test_root"):
        main(["finetune", "test", "--config", "finetune_demo", f"--trainer.default_root_dir={ft_root}",
              "--ckpt_path=last"])  # fmt: skip
    tested = main(
        ["finetune", "test", "--config", "finetune_demo", f"--trainer.default_root_dir={ft_root}",
         "--ckpt_path=last", f"--data.test_root={demo_cache / 'hyspark' / 'synthetic-ct-6-0'}"]
    )  # fmt: skip
    assert 0.0 <= tested.trainer.callback_metrics["test/dice"] <= 1.0

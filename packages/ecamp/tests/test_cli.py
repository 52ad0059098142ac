"""CLI round trips on generated data: distill-reports -> fit (pre-training) -> finetune fit/test/predict
for classification and segmentation; the fine-tuned encoder starts from the pre-trained tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ecamp.cli import main
from ecamp.data import write_demo_pretraining_set, write_demo_segmentation_set
from ecamp.module import FinetuneModule
from medzoo.errors import MedzooDataError

QUIET = [
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_demo_pretraining_set(tmp_path_factory.mktemp("cxr"), n_images=24, size=128, seed=0)


@pytest.fixture(scope="module")
def pretrained(data_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pretrain")
    main(
        ["fit", "--config", "demo", f"--data.root={data_root}", f"--trainer.default_root_dir={run}",
         "--trainer.max_epochs=1", "--data.max_length=32", "--data.batch_size=4",
         "--model.window_update_every=2", *QUIET]
    )  # fmt: skip
    ckpt = run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file() and (data_root / "ecamp_wordpiece.json").is_file()
    return ckpt


@pytest.mark.parametrize("name", ["best.ckpt", "last.ckpt"])  # the state fine-tuned from, and resumed
def test_pretraining_checkpoint_is_safe_and_keeps_the_sr_windows(pretrained, name):
    raw = torch.load(pretrained.with_name(name), map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["variant"] == "tiny"
    windows = raw["sr_windows"]
    assert windows.shape[1] == 3 and len(windows) > 0
    assert ((windows[:, 1:] >= 0) & (windows[:, 1:] <= 8 - 6)).all()  # 6x6 windows on the 8x8 grid
    optimizer = raw["optimizer_states"][0]["param_groups"]
    assert [g["weight_decay"] for g in optimizer] == [0.05, 0.0] and optimizer[0]["betas"] == (0.9, 0.95)


def test_finetuning_loads_the_pretrained_encoder(pretrained):
    state = torch.load(pretrained, map_location="cpu", weights_only=True)["state_dict"]
    module = FinetuneModule(variant="tiny", num_classes=14, pretrained=str(pretrained))
    loaded = module.model.encoder.state_dict()
    encoder_keys = [k for k in state if k.startswith("model.encoder.")]
    assert len(encoder_keys) == len(loaded) > 10
    for key in encoder_keys:
        assert torch.equal(loaded[key[len("model.encoder.") :]], state[key]), key
    random = FinetuneModule(variant="tiny", num_classes=14)
    assert not torch.equal(random.model.encoder.blocks[0].attn.qkv.weight, loaded["blocks.0.attn.qkv.weight"])
    with pytest.raises(MedzooDataError, match="no such file"):
        FinetuneModule(variant="tiny", pretrained="missing.ckpt")


def test_finetune_classification_fit_test_predict(pretrained, data_root, tmp_path):
    run = tmp_path / "cls"
    args = [f"--data.root={data_root}", f"--trainer.default_root_dir={run}", "--data.batch_size=4", *QUIET]
    main(["finetune", "fit", "--config", "finetune_demo", "--task", "cls", "--trainer.max_epochs=1",
          f"--model.pretrained={pretrained}", "--model.linear_probe=true", *args])  # fmt: skip
    ckpt = run / "checkpoints" / "best.ckpt"
    tested = main(["finetune", "test", "--config", "finetune_demo", f"--ckpt_path={ckpt}", *args])
    auc = tested.trainer.callback_metrics["test/auc"]
    assert 0.0 <= float(auc) <= 1.0
    images = sorted((data_root / "images").glob("*.png"))[:3]
    folder = tmp_path / "inputs"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    main(["finetune", "predict", "--config", "finetune_demo", f"--ckpt_path={ckpt}",
          f"--data.predict_root={folder}", *args])  # fmt: skip
    summary = pd.read_csv(run / "predictions" / "summary.csv")
    assert list(summary["image"].map(lambda p: Path(p).name)) == [p.name for p in images]
    assert "Atelectasis" in summary.columns and summary.iloc[:, 1:].to_numpy().max() <= 1.0
    per_image = pd.read_csv(run / "predictions" / f"{images[0].stem}.csv")
    assert list(per_image.columns) == ["finding", "probability"] and len(per_image) == 14


def test_finetune_segmentation_fit_and_predict_masks_at_original_size(tmp_path, pretrained):
    root = write_demo_segmentation_set(tmp_path / "seg", n_images=12, size=96)
    run = tmp_path / "run"
    args = [f"--data.root={root}", f"--trainer.default_root_dir={run}", "--data.batch_size=4", *QUIET]
    main(["finetune", "fit", "--config", "finetune_demo", "--task=seg", "--trainer.max_epochs=1",
          f"--model.pretrained={pretrained}", *args])  # fmt: skip
    ckpt = run / "checkpoints" / "best.ckpt"
    main(["finetune", "predict", "--config", "finetune_demo", "--task", "seg", f"--ckpt_path={ckpt}",
          f"--data.predict_root={root / 'images' / '0001.png'}", *args])  # fmt: skip
    mask = np.asarray(Image.open(run / "predictions" / "0001_mask.png"))
    assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 255}
    summary = pd.read_csv(run / "predictions" / "summary.csv")
    assert summary.loc[0, "mask"] == "0001_mask.png" and summary.loc[0, "height"] == 96


def test_distill_reports_rule_based_and_llm(tmp_path, tiny_causal_lm_dir):
    source = tmp_path / "reports.csv"
    pd.DataFrame({"report": ["Small left pleural effusion.", "The lungs are clear."]}).to_csv(
        source, index=False
    )
    out = main(["distill-reports", "--input", str(source), "--output", str(tmp_path / "rule.csv")])
    table = pd.read_csv(out)
    assert table.loc[0, "llm_output"].startswith("A pleural effusion") and pd.isna(table.loc[1, "llm_output"])
    out = main(["distill-reports", "--input", str(source), "--output", str(tmp_path / "llm.csv"),
                "--model", str(tiny_causal_lm_dir), "--max_new_tokens", "4"])  # fmt: skip
    generated = pd.read_csv(out, keep_default_na=False)  # a random tiny LM: any text, one row per report
    assert list(generated.columns) == ["report", "llm_output"] and len(generated) == 2
    pd.DataFrame({"id": [1, 2], "report": ["Small effusion.", ""]}).to_csv(source, index=False)
    with pytest.raises(MedzooDataError, match=r"row 1.*empty report"):
        main(["distill-reports", "--input", str(source), "--output", str(tmp_path / "bad.csv")])


def test_bad_inputs_are_clear_errors(tmp_path, data_root):
    from ecamp.data import ECAMPDataModule

    # An image smaller than the SR target (here 448 px, the paper's crop).
    module = ECAMPDataModule(root=data_root, image_size=448, max_length=32, vocab_size=1000)
    module.setup("fit")
    with pytest.raises(MedzooDataError, match=r"128x128 px.*>= 448"):
        module.datasets["train"][0]
    # A table without the distilled context, and one with an empty report.
    table = pd.read_csv(data_root / "reports.csv")
    bad = tmp_path / "bad"
    bad.mkdir()
    table.to_csv(bad / "reports_distilled.csv", index=False)
    with pytest.raises(MedzooDataError, match="distill-reports"):
        ECAMPDataModule(root=bad).setup("fit")
    table["llm_output"] = ""
    table.loc[3, "report"] = ""
    table.to_csv(bad / "reports_distilled.csv", index=False)
    with pytest.raises(MedzooDataError, match=r"row 3.*empty report"):
        ECAMPDataModule(root=bad).setup("fit")
    with pytest.raises(MedzooDataError, match="layout"):
        ECAMPDataModule(layout="chexpert")

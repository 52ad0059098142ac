"""CLI round trips on a small generated set: pretrain -> fit -> test -> predict -> generate -> evaluate."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from ct_vlm.cli import main
from ct_vlm.module import CTVLMModule
from medzoo.errors import MedzooDataError
from medzoo.io import write_volume

SMALL = ["--data.synthetic_train=6", "--data.synthetic_test=3", "--data.batch_size=4"]
QUIET = [
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("medzoo_cache")
    old = os.environ.get("MEDZOO_CACHE")
    os.environ["MEDZOO_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("MEDZOO_CACHE")
    else:
        os.environ["MEDZOO_CACHE"] = old


@pytest.fixture(scope="module")
def pretrained(cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    main(["pretrain", "fit", "--config", "pretrain_demo", f"--trainer.default_root_dir={root}",
          "--trainer.max_epochs=1", *QUIET, *SMALL])  # fmt: skip
    return root / "checkpoints" / "best.ckpt"  # the pre-training's best epoch, as the README reuses it


@pytest.fixture(scope="module")
def trained(cache, pretrained, tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    cli = main(["fit", "--config", "demo", f"--trainer.default_root_dir={root}", "--trainer.max_epochs=1",
                f"--model.vision_weights={pretrained}", *QUIET, *SMALL])  # fmt: skip
    return root, cli


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("fit", "predict", "pretrain", "generate", "evaluate"):
        assert verb in out


def test_fit_starts_from_the_pretrained_vit_and_logs_the_metrics(trained, pretrained):
    root, cli = trained
    raw = torch.load(pretrained, map_location="cpu", weights_only=True)["state_dict"]
    start = CTVLMModule(variant="tiny", vision_weights=str(pretrained)).model.vision.state_dict()
    for name, value in start.items():
        assert torch.equal(value, raw[f"model.encoder.{name}"]), name
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["val/loss"])
    assert 0.0 <= float(metrics["val/closed_vqa_accuracy"]) <= 1.0
    assert (root / "checkpoints" / "best.ckpt").is_file()  # what the verbs below score
    assert (root / "checkpoints" / "last.ckpt").is_file()  # the newest state, for resuming


def test_test_predict_generate_and_evaluate_from_the_checkpoint(trained, tmp_path):
    root, _ = trained
    common = ["--config", "demo", f"--trainer.default_root_dir={root}", "--ckpt_path", "best", *QUIET, *SMALL]
    tested = main(["test", *common])
    assert "test/loss" in tested.trainer.callback_metrics
    main(["predict", *common])
    summary = pd.read_csv(root / "predictions" / "summary.csv")
    assert len(summary) == 3 and {"p_yes/Lesion", "p_yes/Large lesion"} <= set(summary.columns)
    first = summary.iloc[0]
    text = (root / "predictions" / first["report_file"]).read_text().strip()
    assert text == (str(first["report"]) if isinstance(first["report"], str) else "")
    record = json.loads(
        (root / "predictions" / first["report_file"].replace("_report.txt", ".json")).read_text()
    )
    assert 0.0 <= record["p_yes"]["Lesion"] <= 1.0
    # Loading the checkpoint again (generate verb, default `--ckpt_path best`) gives the same greedy text as
    # predict did.
    answer = main(["generate", "--volume", first["image"], "--root_dir", str(root),
                   "--output", str(tmp_path / "answer.json")])  # fmt: skip
    assert answer == text and json.loads((tmp_path / "answer.json").read_text())["answer"] == answer
    result = main(["evaluate", "--root_dir", str(root), "--max_new_tokens", "12"])
    assert result["n_samples"] == 3 * (1 + 4 + 1)
    assert (
        0.0 <= result["closed_vqa/accuracy"] <= 1.0 and "report/bleu4" in result and "report/rougeL" in result
    )
    generations = pd.read_csv(root / "evaluate_test_generations.csv")
    assert len(generations) == result["n_samples"]


def test_generate_on_a_real_ct_and_bad_inputs(trained, ct_data_dir, tmp_path):
    root, _ = trained
    answer = main(["generate", "--volume", str(ct_data_dir / "example_ct.nii.gz"), "--root_dir", str(root),
                   "--max_new_tokens", "6", "--prompt", "Is there evidence of lesion?"])  # fmt: skip
    assert isinstance(answer, str)
    write_volume(tmp_path / "slice.nii.gz", np.zeros((16, 16, 1), np.int16), np.eye(4))
    with pytest.raises(MedzooDataError, match=r"slice\.nii\.gz"):
        main(["generate", "--volume", str(tmp_path / "slice.nii.gz"), "--root_dir", str(root)])
    with pytest.raises(MedzooDataError, match="empty prompt"):
        main(
            ["generate", "--volume", str(tmp_path / "slice.nii.gz"), "--root_dir", str(root), "--prompt", " "]
        )
    with pytest.raises(MedzooDataError, match="no such file"):
        main(["generate", "--volume", "x.nii.gz", "--root_dir", str(tmp_path)])
    with pytest.raises(MedzooDataError, match="<image>"):
        CTVLMModule(variant="tiny", prompt_template="Question: {question}")

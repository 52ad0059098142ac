"""The core side of the package contract: GatherAccumulator, build_model, to_uint8, predict_files, and the
medzoo.testing builders (known answers; DDP behaviour is exercised by tests/test_ddp.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medzoo.errors import MedzooDataError
from medzoo.io import to_uint8
from medzoo.lightning import GatherAccumulator, MedzooDataModule
from medzoo.models import build_model, model_settings


def test_gather_accumulator_orders_by_index_and_drops_padding_duplicates() -> None:
    acc = GatherAccumulator("score", "target")
    # A distributed sampler pads the last rank with a repeat of sample 0: it must be counted once.
    acc.update(index=torch.tensor([2, 0]), score=torch.tensor([0.25, 0.0]), target=torch.tensor([1, 0]))
    acc.update(index=torch.tensor([1, 0]), score=torch.tensor([0.5, 0.0]), target=torch.tensor([1, 0]))
    values = acc.compute()
    assert values["score"].tolist() == [0.0, 0.5, 0.25]
    assert values["target"].tolist() == [0, 1, 1]


def test_gather_accumulator_without_index_concatenates_and_keeps_one_sample_shapes() -> None:
    acc = GatherAccumulator("x")
    acc.update(x=torch.ones(1, 3))
    assert acc.compute()["x"].shape == (1, 3)
    acc.reset()
    acc.update(x=torch.tensor([5.0]))
    assert acc.compute()["x"].shape == (1,)  # torchmetrics would squeeze this to a 0-d tensor
    acc.update(x=torch.tensor([6.0, 7.0]))
    assert acc.compute()["x"].tolist() == [5.0, 6.0, 7.0]


def test_gather_accumulator_rejects_mismatched_updates() -> None:
    acc = GatherAccumulator("a", "b")
    with pytest.raises(MedzooDataError, match="exactly"):
        acc.update(a=torch.ones(2))
    with pytest.raises(MedzooDataError, match="one batch size"):
        acc.update(a=torch.ones(2), b=torch.ones(3))
    with pytest.raises(MedzooDataError, match="index"):
        GatherAccumulator("index")


class _Net(torch.nn.Module):
    def __init__(self, width: int, depth: int = 1) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])


CONFIGS = {"paper": {"width": 8, "depth": 3}, "tiny": {"width": 2}}


def test_build_model_applies_overrides_and_names_bad_choices() -> None:
    model = build_model(CONFIGS, _Net, "paper", depth=2)
    assert len(model.layers) == 2 and model.layers[0].in_features == 8
    assert model_settings(CONFIGS, "tiny", depth=4) == {"width": 2, "depth": 4}
    assert CONFIGS["tiny"] == {"width": 2}  # the registry itself is never modified
    with pytest.raises(MedzooDataError, match=r"'huge'.*one of paper, tiny"):
        build_model(CONFIGS, _Net, "huge")
    with pytest.raises(MedzooDataError, match=r"unknown settings \['heads'\]"):
        build_model(CONFIGS, _Net, "tiny", heads=2)


def test_to_uint8_min_max_window_nan_and_constant() -> None:
    image = np.array([[-1000.0, 0.0], [1000.0, np.nan]])
    assert to_uint8(image).tolist() == [[0, 128], [255, 0]]
    assert to_uint8(image, low=-500, high=500).tolist() == [[0, 128], [255, 0]]
    assert to_uint8(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]
    eight = np.array([[3, 250]], dtype=np.uint8)
    assert to_uint8(eight).tolist() == [[3, 250]]
    with pytest.raises(MedzooDataError, match="low <= high"):
        to_uint8(image, low=1, high=0)


class _Files(MedzooDataModule):
    pass


def test_predict_files_expands_file_or_folder_and_errors_clearly(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.png", "a/b/y.PNG", "a/b/z.nii.gz", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert _Files(predict_root=tmp_path / "a").predict_files() == [
        tmp_path / "a/b/y.PNG",
        tmp_path / "a/x.png",
    ]
    assert _Files(predict_root=tmp_path / "a").predict_files([".nii.gz"]) == [tmp_path / "a/b/z.nii.gz"]
    assert _Files(predict_root=tmp_path / "a/notes.txt").predict_files() == [tmp_path / "a/notes.txt"]
    with pytest.raises(MedzooDataError, match="not set"):
        _Files().predict_files()
    with pytest.raises(MedzooDataError, match="no such file or folder"):
        _Files(predict_root=tmp_path / "missing").predict_files()
    with pytest.raises(MedzooDataError, match="no input files"):
        _Files(predict_root=tmp_path / "a").predict_files([".dcm"])


def test_demo_dir_is_the_package_folder_of_the_medzoo_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path))
    # The package is the top-level module of the subclass (here this test module's first name part).
    assert _Files.package_name() == _Files.__module__.split(".")[0].replace("_", "-")
    assert _Files().demo_dir() == tmp_path / _Files.package_name()
    assert (tmp_path / _Files.package_name()).is_dir()


def test_tiny_hf_builders_load_through_from_pretrained(tiny_bert_dir: Path, tiny_causal_lm_dir: Path) -> None:
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    bert = AutoModel.from_pretrained(tiny_bert_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    assert tokenizer.tokenize("small pneumothorax") == ["small", "pneu", "##mo", "##thorax"]
    tokens = tokenizer("pneumothorax")["input_ids"]
    assert bert.config.hidden_size == 32 and tokens[0] == 2 and tokens[-1] == 3  # [CLS] ... [SEP]
    lm = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm_dir)
    ids = tokenizer("<image> The lungs are clear.")["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<image>") in ids
    assert tokenizer.decode(tokenizer("The lungs are clear.")["input_ids"]) == "The lungs are clear."
    logits = lm(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer))


def test_read_grey_uint8_matches_the_rgb_to_grey_of_pillow_and_stretches_16_bit(tmp_path: Path) -> None:
    from PIL import Image

    from medzoo.io import read_grey_uint8

    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(read_grey_uint8(tmp_path / "rgb.png"), expected)
    grey16 = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert read_grey_uint8(tmp_path / "g16.png").tolist() == [[0, 64], [128, 255]]

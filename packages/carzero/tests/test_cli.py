"""CLI round trips: fit on generated data, then predict, zeroshot, evaluate, validate and test from the
checkpoint (`--ckpt_path best`), and the zero-shot validation AUROC checked against scikit-learn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from carzero.cli import main
from medzoo.errors import MedzooDataError

FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Pneumothorax"]


def model_args(tiny_bert_dir: Path) -> list[str]:
    # The demo config starts from `carzero pretrain`'s ViT; these round trips start from random weights.
    return ["--model.variant=tiny", f'--model.overrides={{"text_model": "{tiny_bert_dir}"}}',
            "--model.vit_weights=null"]  # fmt: skip


def run_args(verb: str, root: Path, tiny_bert_dir: Path, epochs: int = 2) -> list[str]:
    return [
        verb,
        "--config", "demo",
        f"--trainer.default_root_dir={root / 'run'}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--model.global_warmup_epochs=1",  # the demo's 5: here one warm-up epoch, then the CARZero loss
        *model_args(tiny_bert_dir),
        "--data.synthetic_images=40",
        "--data.synthetic_size=[64, 64]",
        "--data.crop=32",
        "--data.resize=37",
        "--data.batch_size=4",
        "--data.batch_size_schedule={0: 4, 1: 8}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """A 2-epoch demo fit of the tiny model; the demo set lives under a private $MEDZOO_CACHE.

    `ckpt` is the best validation epoch (checkpoints/best.ckpt), the state `--ckpt_path best` scores.
    """
    root = tmp_path_factory.mktemp("carzero_cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDZOO_CACHE", str(root / "cache"))
        cli = main(run_args("fit", root, tiny_bert_dir))
        ckpt = root / "run" / "checkpoints" / "best.ckpt"
        assert ckpt.is_file()
        yield root, ckpt, cli


def demo_data(root: Path) -> Path:
    return root / "cache" / "carzero" / "cxr-n40-64x64-seed0"


def test_fit_on_synthetic_data_applies_the_batch_size_schedule(trained):
    root, ckpt, cli = trained
    trainer = cli.trainer
    assert trainer.current_epoch == 2
    # The schedule {0: 4, 1: 8} is applied by rebuilding the loader every epoch.
    assert trainer.train_dataloader.batch_size == 8
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["val/loss"])
    assert "val/auc" in metrics and 0.0 <= float(metrics["val/auc"]) <= 1.0
    # The best checkpoint follows the zero-shot AUROC.
    assert trainer.checkpoint_callback.monitor == "val/auc" and trainer.checkpoint_callback.mode == "max"
    assert (root / "run" / "checkpoints" / "best.ckpt").is_file()
    assert (root / "run" / "checkpoints" / "last.ckpt").is_file()  # the newest state, for resuming
    # Checkpoints are loadable with weights_only=True and hold plain hyperparameters.
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["variant"] == "tiny"
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam)
    # the demo's recipe (README, Choices and deviations): Adam (0.9, 0.999), the ViT at 0.1x the rate
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["weight_decay"] == 1e-6
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1e-3, 1e-4])
    assert trainer.gradient_clip_val == 0.25


def test_checkpoint_loads_without_the_mae_weights_it_started_from(trained, tmp_path):
    # A demo checkpoint records `--model.vit_weights` (a path relative to the run's folder); the checkpoint
    # holds every weight, so scoring elsewhere must not read that file again.
    from carzero.cli import load_module

    _, ckpt, _ = trained
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["hyper_parameters"]["vit_weights"] = str(tmp_path / "moved" / "vit_weights.safetensors")
    torch.save(raw, tmp_path / "elsewhere.ckpt")
    loaded = load_module(tmp_path / "elsewhere.ckpt").state_dict()
    for name, tensor in load_module(ckpt).state_dict().items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)


def sklearn_macro_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    both = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
    return float(np.mean([roc_auc_score(labels[:, c], scores[:, c]) for c in both]))


def test_validate_auc_equals_sklearn_on_the_same_outputs(trained, tiny_bert_dir):
    root, ckpt, _ = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDZOO_CACHE", str(root / "cache"))
        cli = main([*run_args("validate", root, tiny_bert_dir), "--ckpt_path", "best"])
    logged = float(cli.trainer.callback_metrics["val/auc"])
    # The same images scored in-process, one at a time, and the AUROC computed by scikit-learn.
    from carzero.cli import load_module

    module = load_module(ckpt)
    dataset = cli.datamodule.datasets["val_labels"]
    names = cli.datamodule.class_names
    scores = np.concatenate(
        [module.zero_shot(dataset[i]["image"][None], names).numpy() for i in range(len(dataset))]
    )
    expected = sklearn_macro_auroc(dataset.labels, scores)
    assert logged == pytest.approx(expected, abs=1e-5)


def test_gathered_auc_drops_the_ddp_padding_and_equals_sklearn(trained):
    """Two ranks of a DistributedSampler (which pads with duplicates) feed one GatherAccumulator, as the
    all-gather under DDP does: the macro AUROC equals scikit-learn's on the split, each image once."""
    _, ckpt, _ = trained
    from torch.utils.data import DataLoader, DistributedSampler

    from carzero.cli import _transform, load_module
    from carzero.data import LabelledImageDataset
    from carzero.module import zero_shot_metrics

    module = load_module(ckpt)
    rng = np.random.default_rng(0)
    images = sorted((demo_data(trained[0]) / "images").glob("*.png"))[:7]  # odd: one duplicate pads a rank
    labels = (rng.random((7, len(FINDINGS))) < 0.5).astype(np.float32)
    labels[0], labels[1] = 1, 0  # every class has both values
    dataset = LabelledImageDataset(images, labels, _transform(module))
    accumulator = module.outputs["val"]
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        for batch in DataLoader(dataset, batch_size=2, sampler=sampler):
            scores = module.zero_shot(batch["image"], FINDINGS)
            accumulator.update(index=batch["index"], scores=scores, labels=batch["labels"])
    gathered = accumulator.compute()
    accumulator.reset()
    assert gathered["scores"].shape == (7, len(FINDINGS))
    single = np.concatenate([module.zero_shot(dataset[i]["image"][None], FINDINGS).numpy() for i in range(7)])
    np.testing.assert_allclose(gathered["scores"].numpy(), single, rtol=1e-5, atol=1e-6)
    auc = zero_shot_metrics(gathered["labels"].numpy(), gathered["scores"].numpy())["auc"]
    assert auc == pytest.approx(sklearn_macro_auroc(labels, single), abs=1e-6)


def test_predict_writes_scores_into_predictions(trained, tiny_bert_dir):
    root, ckpt, _ = trained
    images = demo_data(root) / "images"
    main([*run_args("predict", root, tiny_bert_dir), "--ckpt_path", "best", f"--data.predict_root={images}"])
    folder = root / "run" / "predictions"
    summary = pd.read_csv(folder / "summary.csv")
    names = sorted(p.name for p in images.glob("*.png"))
    assert summary["image"].tolist() == names  # every image once, in order
    from medzoo.synthetic import NIH_FINDINGS

    assert list(summary.columns) == ["image", *NIH_FINDINGS]  # the configured findings (data.class_names)
    first = json.loads((folder / names[0].replace(".png", ".json")).read_text())
    assert first["image"] == str(images / names[0])
    assert [first["scores"][f] for f in NIH_FINDINGS] == pytest.approx(summary.iloc[0, 1:].tolist())
    # The numbers are the model's: one image recomputed in-process.
    from carzero.cli import _transform, load_module
    from carzero.data import read_cxr

    module = load_module(ckpt)
    image = _transform(module)(read_cxr(images / names[0])).unsqueeze(0)
    expected = module.zero_shot(image, list(NIH_FINDINGS))[0].numpy()
    np.testing.assert_allclose(summary.iloc[0, 1:].to_numpy(dtype=float), expected, rtol=1e-4, atol=1e-5)


def test_zeroshot_with_ckpt_path_best_agrees_with_predict(trained, tmp_path):
    root, _, _ = trained
    images = demo_data(root) / "images"
    output = tmp_path / "zeroshot"
    result = main(["zeroshot", "--predict_root", str(images), "--findings", ",".join(FINDINGS), "--ckpt_path",
                   "best", "--root_dir", str(root / "run"), "--output_dir", str(output)])  # fmt: skip
    assert Path(result) == output / "summary.csv"
    table = pd.read_csv(output / "summary.csv")
    assert list(table.columns) == ["image", *FINDINGS]
    assert table["image"].tolist() == sorted(p.name for p in images.glob("*.png"))
    assert len(list(output.glob("*.json"))) == len(table)
    predicted = root / "run" / "predictions" / "summary.csv"
    if predicted.is_file():  # the two paths (Lightning predict, the function verb) give the same scores
        np.testing.assert_allclose(
            table[FINDINGS].to_numpy(), pd.read_csv(predicted)[FINDINGS].to_numpy(), rtol=1e-4, atol=1e-5
        )


def test_zeroshot_on_real_nih_images(trained, tmp_path, shared_data):
    _, ckpt, _ = trained
    nih = shared_data / "cxr-nih" / "images"
    if not nih.is_dir():
        pytest.skip(f"real NIH images not found at {nih}")
    main(["zeroshot", "--predict_root", str(nih), "--findings", ",".join(FINDINGS), "--ckpt_path", str(ckpt),
          "--output_dir", str(tmp_path)])  # fmt: skip
    table = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(table["image"]) == sorted(p.name for p in nih.glob("*.png"))
    assert np.isfinite(table[FINDINGS].to_numpy()).all()


def test_evaluate_chestxray14_layout_on_generated_data(trained, tmp_path):
    root, _, _ = trained
    data = demo_data(root)  # make_cxr_dataset wrote the NIH layout too: Data_Entry_2017.csv + test_list.txt
    result = main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt_path", "best",
                   "--root_dir", str(root / "run"), "--output_dir", str(tmp_path)])  # fmt: skip
    saved = json.loads((tmp_path / "evaluate_chestxray14.json").read_text())
    assert saved["n_images"] == len((data / "test_list.txt").read_text().split())
    assert 0.0 <= result["auc"] <= 1.0
    # The groups are computed from the test set's own positive counts.
    counts = np.array(list(saved["positives"].values()))
    head = {n for n, c in saved["positives"].items() if c > np.percentile(counts, 65)}
    assert set(saved["groups"]["head"]) == head
    # The reference's fixed tail (<= 10 positives) may overlap the head on a small set; together they
    # cover every class.
    assert set(saved["groups"]["tail"]) == {n for n, c in saved["positives"].items() if c <= 10}
    assert set().union(*map(set, saved["groups"].values())) == set(saved["positives"])
    assert saved["tail_rule"] == "fixed"


def test_test_verb_reports_zero_shot_auc(trained, tiny_bert_dir):
    root, _, _ = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDZOO_CACHE", str(root / "cache"))
        cli = main([*run_args("test", root, tiny_bert_dir), "--ckpt_path", "best"])
    metrics = cli.trainer.callback_metrics
    assert {"test/auc", "test/auc_head", "test/auc_medium", "test/auc_tail"} <= set(metrics)


def test_test_verb_on_an_official_test_set_equals_evaluate(trained, tiny_bert_dir, tmp_path):
    root, _, _ = trained
    data = demo_data(root)
    args = [*run_args("test", root, tiny_bert_dir), "--ckpt_path", "best", "--data.test_set=chestxray14",
            f"--data.test_root={data}"]  # fmt: skip
    cli = main(args)
    from medzoo.synthetic import NIH_FINDINGS

    assert cli.datamodule.test_class_names == list(NIH_FINDINGS)
    evaluated = main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt_path", "best",
                      "--root_dir", str(root / "run"), "--output_dir", str(tmp_path)])  # fmt: skip
    assert float(cli.trainer.callback_metrics["test/auc"]) == pytest.approx(evaluated["auc"], abs=1e-5)


def test_evaluate_grouping_from_the_real_nih_label_table(shared_data):
    nih = shared_data / "cxr-nih"
    table_path = nih / "metadata" / "Data_Entry_2017_v2020.csv.gz"
    if not table_path.is_file():
        pytest.skip(f"real NIH label table not found at {table_path}")
    from carzero.module import frequency_groups
    from carzero.testsets import load_chestxray14
    from medzoo.synthetic import NIH_FINDINGS

    test = load_chestxray14(nih, split="all", check_images=False)
    assert test.labels.shape == (112120, 14)
    # Independent count with pandas string matching.
    findings = pd.read_csv(table_path)["Finding Labels"]
    counts = np.array([findings.str.split("|").apply(lambda row, c=c: c in row).sum() for c in NIH_FINDINGS])
    np.testing.assert_array_equal(test.positives(), counts)
    assert counts[NIH_FINDINGS.index("Infiltration")] == 19894  # the published NIH count
    groups = frequency_groups(test.positives())
    threshold = np.percentile(counts, 65)
    expected_head = [i for i, c in enumerate(counts) if c > threshold]
    assert groups["head"].tolist() == expected_head
    assert {NIH_FINDINGS[i] for i in groups["head"]} >= {"Infiltration", "Effusion", "Atelectasis"}
    assert groups["tail"].size == 0  # every NIH class has far more than 10 positives
    assert sorted(np.concatenate(list(groups.values())).tolist()) == list(range(14))


def test_bad_inputs_give_clear_errors(trained, tmp_path):
    root, ckpt, _ = trained
    with pytest.raises(MedzooDataError, match=r"expected one of"):
        main(["evaluate", "--dataset", "mimic", "--root", str(tmp_path), "--ckpt_path", str(ckpt)])
    images = demo_data(root) / "images"
    with pytest.raises(MedzooDataError, match="no such file"):
        main(["zeroshot", "--predict_root", str(images), "--findings", "Effusion",
              "--ckpt_path", str(tmp_path / "x.ckpt")])  # fmt: skip
    for keyword in ("best", "last"):  # a run folder without checkpoints
        with pytest.raises(MedzooDataError, match=rf"--ckpt_path {keyword}.*no such file"):
            main(["zeroshot", "--predict_root", str(images), "--findings", "Effusion", "--ckpt_path", keyword,
                  "--root_dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(MedzooDataError, match="no input files"):
        main(
            ["zeroshot", "--predict_root", str(tmp_path), "--findings", "Effusion", "--ckpt_path", str(ckpt)]
        )
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(MedzooDataError, match="unreadable checkpoint"):
        main(
            [
                "zeroshot",
                "--predict_root",
                str(images),
                "--findings",
                "Effusion",
                "--ckpt_path",
                str(truncated),
            ]
        )
    # An image listed in the NIH table but missing on disk.
    data = tmp_path / "nih"
    shutil.copytree(demo_data(root), data, ignore=shutil.ignore_patterns("*.png"))
    with pytest.raises(MedzooDataError, match="missing on disk"):
        main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt_path", str(ckpt)])
    with pytest.raises(MedzooDataError, match=r"options \['split'\]"):
        main(
            [
                "evaluate",
                "--dataset",
                "chexpert",
                "--root",
                str(data),
                "--ckpt_path",
                str(ckpt),
                "--split",
                "all",
            ]
        )


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for verb in ("fit", "validate", "test", "predict", "zeroshot", "evaluate", "align-reports"):
        assert verb in text


def test_paper_config_holds_the_paper_optimisation(tiny_bert_dir):
    from carzero.data import CARZeroDataModule
    from carzero.module import CARZeroModule
    from medzoo.lightning import cli

    # The paper's variant with a tiny text encoder and ViT; the fusion keeps the paper's depth and head.
    small = {"text_model": str(tiny_bert_dir), "img_size": 32, "vit_dim": 32, "vit_depth": 1, "vit_heads": 2}
    built = cli(CARZeroModule, CARZeroDataModule, package="carzero", run=False, args=[
        "--config", "paper", f"--model.overrides={json.dumps(small)}", "--trainer.precision=32",
        "--trainer.logger=false",
    ])  # fmt: skip
    optimizers = built.model.configure_optimizers()
    adam = optimizers["optimizer"]
    assert isinstance(adam, torch.optim.Adam)
    assert adam.defaults["lr"] == 5e-5 and adam.defaults["betas"] == (0.5, 0.999)
    assert adam.defaults["weight_decay"] == 1e-6
    plateau = optimizers["lr_scheduler"]
    assert isinstance(plateau["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert plateau["monitor"] == "val/loss" and plateau["scheduler"].factor == 0.5
    assert plateau["scheduler"].patience == 5
    assert built.trainer.gradient_clip_val == 0.25 and built.trainer.max_epochs == 15
    assert built.trainer.reload_dataloaders_every_n_epochs == 1
    assert built.trainer.default_root_dir == "runs/carzero-paper"
    assert built.datamodule.batch_size_schedule == {0: 64, 2: 128, 6: 256}
    assert (built.datamodule.resize, built.datamodule.crop) == (256, 224)
    assert built.model.hparams["variant"] == "paper"
    fusion = built.model.model.fusion
    assert len(fusion.layers) == 4 and isinstance(fusion.head, torch.nn.Linear)
    assert built.trainer.checkpoint_callback.monitor == "val/auc"


def test_prompt_features_are_encoded_once_per_run(trained):
    _, ckpt, _ = trained
    from carzero.cli import _score, _transform, load_module
    from carzero.data import ImageFolderDataset

    images = sorted((demo_data(trained[0]) / "images").glob("*.png"))[:2]
    module = load_module(ckpt)
    calls = []
    encode_text = module.model.encode_text
    module.model.encode_text = lambda *a, **k: calls.append(1) or encode_text(*a, **k)
    dataset = ImageFolderDataset(images, _transform(module))
    scores = _score(module, dataset, FINDINGS, batch_size=1, device="cpu")  # two batches
    assert scores.shape == (2, len(FINDINGS)) and len(calls) == 1


def test_zeroshot_skips_a_corrupt_image_lists_it_and_strict_stops(trained, tmp_path, capsys):
    root, ckpt, _ = trained
    folder = tmp_path / "xrays"
    shutil.copytree(demo_data(root) / "images", folder)
    good = sorted(p.name for p in folder.glob("*.png"))[:3]
    for extra in sorted(folder.glob("*.png"))[3:]:
        extra.unlink()
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    output = tmp_path / "out"
    main(["zeroshot", "--predict_root", str(folder), "--findings", ",".join(FINDINGS), "--ckpt_path",
          str(ckpt), "--output_dir", str(output)])  # fmt: skip
    table = pd.read_csv(output / "summary.csv")
    assert table["image"].tolist() == good  # every other image is scored
    failures = pd.read_csv(output / "failures.csv")
    assert failures["image"].tolist() == ["broken.png"] and failures["error"].str.len().min() > 0
    assert "broken.png" in capsys.readouterr().err
    # The scores of the good images equal a run on a folder without the broken file.
    (folder / "broken.png").unlink()
    clean = tmp_path / "clean"
    main(["zeroshot", "--predict_root", str(folder), "--findings", ",".join(FINDINGS), "--ckpt_path",
          str(ckpt), "--output_dir", str(clean)])  # fmt: skip
    np.testing.assert_allclose(pd.read_csv(clean / "summary.csv")[FINDINGS], table[FINDINGS], rtol=1e-6)
    assert not (clean / "failures.csv").exists()
    (folder / "broken.png").write_bytes(b"garbage")
    with pytest.raises(MedzooDataError, match=r"broken\.png"):
        main(["zeroshot", "--predict_root", str(folder), "--findings", "Effusion", "--ckpt_path", str(ckpt),
              "--output_dir", str(tmp_path / "strict"), "--strict", "true"])  # fmt: skip


def test_evaluate_reports_scored_and_skipped_classes(trained, tmp_path, capsys):
    root, ckpt, _ = trained
    data = tmp_path / "nih"
    shutil.copytree(demo_data(root), data)
    table = pd.read_csv(data / "Data_Entry_2017.csv")
    names = (data / "test_list.txt").read_text().split()
    # Make exactly Effusion and Mass scorable: Effusion on the first half, Mass on the first test image.
    test_rows = table["Image Index"].isin(names)
    labels = ["No Finding"] * len(table)
    for k, index in enumerate(np.flatnonzero(test_rows)):
        labels[index] = "|".join((["Effusion"] if k < len(names) // 2 else []) + (["Mass"] if k == 0 else []))
        labels[index] = labels[index] or "No Finding"
    table["Finding Labels"] = labels
    table.to_csv(data / "Data_Entry_2017.csv", index=False)
    result = main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt_path", str(ckpt),
                   "--output_dir", str(tmp_path)])  # fmt: skip
    saved = json.loads((tmp_path / "evaluate_chestxray14.json").read_text())
    assert saved["n_scored_classes"] == 2 and saved["scored_classes"] == ["Effusion", "Mass"]
    assert len(saved["skipped_classes"]) == 12 and "Hernia" in saved["skipped_classes"]
    per_class = saved["per_class_auc"]
    assert result["auc"] == pytest.approx((per_class["Effusion"] + per_class["Mass"]) / 2)
    printed = capsys.readouterr().out
    assert "2 of 14 classes scored" in printed and "skipped" in printed and "Hernia" in printed
    # One scorable class: no macro AUROC, said so in the printout and null in the JSON.
    table["Finding Labels"] = [lab.replace("|Mass", "").replace("Mass", "No Finding") for lab in labels]
    table.to_csv(data / "Data_Entry_2017.csv", index=False)
    result = main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt_path", str(ckpt),
                   "--output_dir", str(tmp_path)])  # fmt: skip
    saved = json.loads((tmp_path / "evaluate_chestxray14.json").read_text())
    assert saved["n_scored_classes"] == 1 and saved["auc"] is None and result["auc"] is None
    assert "no macro AUROC" in capsys.readouterr().out


def test_fixed_tail_threshold_of_the_reference_and_the_adaptive_option():
    from carzero.module import frequency_groups

    counts = np.array([0, 2, 3, 5, 8, 9, 12, 40])  # 65th percentile = 8.55
    fixed = frequency_groups(counts)
    assert fixed["head"].tolist() == [5, 6, 7]  # > 8.55
    # tail = at most 10: class 5 (9 positives) is head and tail at once, as in the reference
    assert fixed["tail"].tolist() == [0, 1, 2, 3, 4, 5]
    assert fixed["medium"].tolist() == []
    adaptive = frequency_groups(counts, tail="adaptive")
    assert adaptive["tail"].tolist() == [0, 1, 2, 3, 4] and adaptive["head"].tolist() == [5, 6, 7]
    with pytest.raises(ValueError, match="tail"):
        frequency_groups(counts, tail="percentile")


def test_paper_config_stops_early_on_val_loss(tiny_bert_dir):
    from pytorch_lightning.callbacks import EarlyStopping

    from carzero.data import CARZeroDataModule
    from carzero.module import CARZeroModule
    from medzoo.lightning import cli

    small = {"text_model": str(tiny_bert_dir), "img_size": 32, "vit_dim": 32, "vit_depth": 1, "vit_heads": 2}
    built = cli(CARZeroModule, CARZeroDataModule, package="carzero", run=False, args=[
        "--config", "paper", f"--model.overrides={json.dumps(small)}", "--trainer.precision=32",
        "--trainer.logger=false",
    ])  # fmt: skip
    stops = [c for c in built.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert len(stops) == 1 and stops[0].monitor == "val/loss" and stops[0].patience == 10
    assert stops[0].mode == "min"


def test_zeroshot_attention_maps_and_bf16_precision(trained, tmp_path):
    root, ckpt, _ = trained
    images = demo_data(root) / "images"
    first = sorted(images.glob("*.png"))[:4]
    folder = tmp_path / "four"
    folder.mkdir()
    for path in first:
        shutil.copy(path, folder / path.name)
    args = ["zeroshot", "--predict_root", str(folder), "--findings", ",".join(FINDINGS), "--ckpt_path",
            str(ckpt)]  # fmt: skip
    maps = tmp_path / "maps"
    main(
        [*args, "--output_dir", str(tmp_path / "fp32"), "--attention_maps", str(maps), "--top_findings", "2"]
    )
    fp32 = pd.read_csv(tmp_path / "fp32" / "summary.csv")
    # Two overlays per image, named by rank and finding: the two highest-scoring findings.
    for _, row in fp32.iterrows():
        ranked = sorted(FINDINGS, key=lambda f, row=row: -row[f])[:2]
        written = sorted(p.name for p in (maps / Path(row["image"]).stem).glob("*.png"))
        assert written == [f"1_{ranked[0]}.png", f"2_{ranked[1]}.png"]
    overlay = np.asarray(__import__("PIL.Image").Image.open(next(maps.rglob("1_*.png"))))
    assert overlay.shape == (32, 32, 3) and (overlay[..., 0] >= overlay[..., 1]).all()  # red blend
    # bf16 autocast (CPU): scores within 2 % of the fp32 score range of the same images.
    main([*args, "--output_dir", str(tmp_path / "bf16"), "--precision", "bf16"])
    bf16 = pd.read_csv(tmp_path / "bf16" / "summary.csv")
    reference = fp32[FINDINGS].to_numpy()
    spread = reference.max() - reference.min()
    assert np.abs(bf16[FINDINGS].to_numpy() - reference).max() <= 0.02 * spread + 1e-3
    assert not np.array_equal(bf16[FINDINGS].to_numpy(), reference)  # it did run in bf16
    with pytest.raises(MedzooDataError, match="16 needs CUDA"):
        main([*args, "--output_dir", str(tmp_path / "fp16"), "--precision", "16"])
    with pytest.raises(MedzooDataError, match="--precision"):
        main([*args, "--output_dir", str(tmp_path / "x"), "--precision", "fp8"])

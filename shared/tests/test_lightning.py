"""medzoo.lightning: base module, schedule, splits and the shared CLI, end to end on a tiny regressor."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.utils.data import TensorDataset

from medzoo.errors import MedzooDataError, MedzooTrainingError
from medzoo.lightning import (
    MedzooDataModule,
    MedzooModule,
    PredictionWriter,
    WarmupCosineLR,
    cli,
    resolve_config_args,
    seeded_split,
)

# ------------------------------------------------------------------------------------------------------------
# A tiny linear regressor on seeded synthetic data
# ------------------------------------------------------------------------------------------------------------


class RegressionWriter(PredictionWriter):
    """One JSON file per input (``row_<index>.json``) and a summary row with the prediction."""

    def write_batch(self, prediction, batch, output_dir):
        from medzoo.io import write_json

        rows = []
        for index, value in zip(batch[2].tolist(), prediction[:, 0].tolist(), strict=True):
            write_json(output_dir / f"row_{index}.json", {"index": index, "prediction": value})
            rows.append({"index": index, "prediction": value})
        return rows


class LinearRegressor(MedzooModule):
    monitor = "val/mse"
    monitor_mode = "min"

    def __init__(
        self,
        in_features: int = 4,
        dropout: float = 0.0,
        nan_at_step: int = -1,
        crash_at_step: int = -1,
        optimizer: OptimizerCallable = torch.optim.SGD,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 1))
        self.nan_at_step = nan_at_step
        self.crash_at_step = crash_at_step

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        if self.global_step == self.nan_at_step:
            loss = loss * float("nan")
        if self.global_step == self.crash_at_step:
            raise RuntimeError("simulated crash in the middle of an epoch")
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/mse", nn.functional.mse_loss(self.net(x), y))

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self.net(batch[0])

    def prediction_writer(self) -> PredictionWriter:
        return RegressionWriter()


class NoisyInputs(TensorDataset):
    """Adds Gaussian noise to x on every read: random augmentation drawn in the loader's worker."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, noise: float) -> None:
        super().__init__(x, y)
        self.noise = noise

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitem__(index)
        return x + self.noise * torch.randn(x.shape), y


class SyntheticRegression(MedzooDataModule):
    def __init__(
        self,
        n: int = 64,
        in_features: int = 4,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        noise: float = 0.0,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.noise = noise
        generator = torch.Generator().manual_seed(1234)
        x = torch.randn(n, in_features, generator=generator)
        w = torch.arange(1, in_features + 1, dtype=torch.float32)[:, None]
        self.x, self.y = x, x @ w + 0.5
        self.train_idx, self.val_idx = seeded_split(n, (0.75, 0.25), seed)

    def train_dataloader(self):
        return self.train_loader(NoisyInputs(self.x[self.train_idx], self.y[self.train_idx], self.noise))

    def val_dataloader(self):
        return self.eval_loader(TensorDataset(self.x[self.val_idx], self.y[self.val_idx]))

    def predict_dataloader(self):
        index = torch.as_tensor(self.val_idx)
        return self.eval_loader(TensorDataset(self.x[self.val_idx], self.y[self.val_idx], index))


PKG = "medzoo_fakepkg"


@pytest.fixture(scope="module")
def fake_package(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An importable package shipping configs/demo.yaml, as a real medzoo package does."""
    root = tmp_path_factory.mktemp("site")
    package = root / PKG
    (package / "configs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "configs" / "demo.yaml").write_text(
        textwrap.dedent(
            """\
            trainer:
              max_epochs: 2
              limit_train_batches: 3
            model:
              in_features: 4
              optimizer:
                class_path: torch.optim.AdamW
                init_args: {lr: 0.05}
            data:
              batch_size: 4
            """
        )
    )
    sys.path.insert(0, str(root))
    yield PKG
    sys.path.remove(str(root))
    sys.modules.pop(PKG, None)


def run_cli(root: Path, *extra: str, verb: str | None = "fit", package: str = PKG, **kwargs):
    args = [
        *([verb] if verb else []),
        f"--trainer.default_root_dir={root}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_model_summary=false",
        *extra,
    ]
    return cli(LinearRegressor, SyntheticRegression, package=package, args=args, **kwargs)


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------------------------
# cli(): fit, checkpoints, loggers, resume
# ------------------------------------------------------------------------------------------------------------

OPT = ["--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=0.05"]


def test_fit_writes_checkpoints_metrics_and_tensorboard(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--trainer.max_epochs=2", *OPT)
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    best = sorted(p.name for p in ckpts.glob("best*.ckpt"))
    assert best == ["best.ckpt"], best
    assert result.trainer.checkpoint_callback.monitor == "val/mse"
    assert Path(result.trainer.checkpoint_callback.best_model_path).name == "best.ckpt"
    metrics = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/mse" in metrics and "train/loss" in metrics
    assert list((tmp_path / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    assert (tmp_path / "csv" / "version_0" / "config.yaml").is_file()
    leftovers = [p.name for p in ckpts.iterdir() if p.name not in ("last.ckpt", "best.ckpt")]
    assert not leftovers, f"temporary checkpoint files left behind: {leftovers}"
    # The learned weights approach w = (1, 2, 3, 4): training really happened.
    first = torch.load(ckpts / "last.ckpt", weights_only=True, map_location="cpu")
    assert first["global_step"] == 2 * 6
    assert first["hyper_parameters"]["in_features"] == 4


def test_resume_last_continues_global_step_and_second_run_in_same_folder(tmp_path: Path) -> None:
    run_cli(tmp_path, "--trainer.max_epochs=1", *OPT)
    resumed = run_cli(tmp_path, "--trainer.max_epochs=2", "--ckpt_path=last", *OPT)
    assert resumed.trainer.global_step == 12  # 6 steps from the first run + 6 new ones
    assert resumed.trainer.current_epoch == 2
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 12
    # A fresh (not resumed) run in the same folder is not refused by the config saver.
    again = run_cli(tmp_path, "--trainer.max_epochs=1", *OPT)
    assert again.trainer.global_step == 6
    # ... and its checkpoints replace the earlier run's, so `--ckpt_path last|best` name the new run's.
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("best.ckpt", "last.ckpt"):
        assert torch.load(ckpts / name, weights_only=True)["global_step"] == 6, name
    assert len(list((tmp_path / "csv").glob("version_*/config.yaml"))) == 3


@pytest.mark.parametrize(
    ("dropout", "num_workers", "noise"),
    [(0.0, 0, 0.0), (0.3, 0, 0.1), (0.3, 1, 0.1)],
    ids=["plain", "dropout-augmentation", "dropout-worker-augmentation"],
)
def test_stop_at_epoch_end_and_resume_gives_the_same_weights(
    tmp_path: Path, dropout: float, num_workers: int, noise: float
) -> None:
    data = [f"--data.num_workers={num_workers}", f"--data.noise={noise}"]
    common = [*OPT, f"--model.dropout={dropout}", "--seed_everything=7", *data]
    schedule = [
        "--model.scheduler=medzoo.lightning.WarmupCosineLR",
        "--model.scheduler.warmup_steps=1",
        "--model.scheduler.total_steps=3",
    ]
    straight = run_cli(tmp_path / "a", "--trainer.max_epochs=3", *common, *schedule)
    run_cli(tmp_path / "b", "--trainer.max_epochs=1", *common, *schedule)
    resumed = run_cli(tmp_path / "b", "--trainer.max_epochs=3", "--ckpt_path=last", *common, *schedule)
    a, b = weights(straight.model), weights(resumed.model)
    assert resumed.trainer.global_step == straight.trainer.global_step == 18
    assert all(torch.equal(a[k], b[k]) for k in a), {k: (a[k] - b[k]).abs().max().item() for k in a}
    # A different seed gives different weights, so the equality above is not vacuous.
    other = run_cli(
        tmp_path / "c", "--trainer.max_epochs=3", *OPT, f"--model.dropout={dropout}", *data, *schedule
    )
    assert not all(torch.equal(a[k], v) for k, v in weights(other.model).items())


def test_crash_mid_epoch_then_resume_from_last_gives_the_same_weights(tmp_path: Path) -> None:
    """A run that dies in the middle of epoch 1 (step 9 of 6 per epoch) resumes from the epoch-0
    checkpoint, redoes epoch 1 and ends with the uninterrupted run's weights."""
    common = [*OPT, "--model.dropout=0.3", "--seed_everything=3", "--data.noise=0.1"]
    straight = run_cli(tmp_path / "a", "--trainer.max_epochs=3", *common)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(tmp_path / "b", "--trainer.max_epochs=3", "--model.crash_at_step=9", *common)
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 6  # the crash left the epoch-end checkpoint intact
    resumed = run_cli(tmp_path / "b", "--trainer.max_epochs=3", "--ckpt_path=last", *common)
    a, b = weights(straight.model), weights(resumed.model)
    assert resumed.trainer.global_step == 18
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(MedzooTrainingError, match=r"loss is nan at global step 2, epoch 0.*Hint"):
        run_cli(tmp_path, "--trainer.max_epochs=2", "--model.nan_at_step=2", *OPT)
    # As a console script: one line on stderr and exit status 1, no traceback.
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tmp_path, "--trainer.max_epochs=2", "--model.nan_at_step=7", *OPT, catch_errors=True)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"{PKG}: error: LinearRegressor: the training loss is nan at global step 7, epoch 1" in err


def test_console_script_mode_returns_none_so_the_script_exits_zero(tmp_path: Path) -> None:
    # Console scripts run `sys.exit(main())`: a returned LightningCLI would exit with status 1.
    assert run_cli(tmp_path, "--trainer.max_epochs=1", *OPT, catch_errors=True) is None
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_packaged_config_by_name(tmp_path: Path, fake_package: str) -> None:
    shipped = Path(resolve_config_args(["fit", "--config", "demo"], fake_package)[2])
    assert shipped.name == "demo.yaml" and shipped.parent.name == "configs"
    assert resolve_config_args(["--config=demo"], fake_package) == [f"--config={shipped}"]
    path = tmp_path / "mine.yaml"
    assert resolve_config_args(["-c", str(path)], fake_package) == ["-c", str(path)]
    with pytest.raises(MedzooDataError, match=r"no config named 'paperz'.*packaged: demo"):
        resolve_config_args(["--config", "paperz"], fake_package)

    result = run_cli(tmp_path, "--config", "demo", package=fake_package)
    assert result.trainer.max_epochs == 2
    assert isinstance(result.trainer.optimizers[0], torch.optim.AdamW)
    assert result.trainer.global_step == 2 * 3
    with pytest.raises(SystemExit):
        run_cli(tmp_path, "--config", "paperz", package=fake_package)


def test_checkpoint_monitor_is_overridable_and_run_false(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "--checkpoint.monitor=train/loss", "--checkpoint.mode=max", verb=None, run=False
    )
    assert result.trainer.checkpoint_callback.monitor == "train/loss"
    assert result.trainer.global_step == 0 and not (tmp_path / "checkpoints").exists()
    assert result.trainer.checkpoint_callback.mode == "max"


def test_predict_from_checkpoint_with_weights_only(tmp_path: Path) -> None:
    fitted = run_cli(tmp_path, "--trainer.max_epochs=1", *OPT)
    predicted = run_cli(tmp_path, f"--ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}", verb="predict")
    assert predicted.config.predict.weights_only is True
    a, b = weights(fitted.model), weights(predicted.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The contract: predict writes through the module's PredictionWriter into <root>/predictions/.
    import pandas as pd

    summary = pd.read_csv(tmp_path / "predictions" / "summary.csv")
    data = SyntheticRegression()
    with torch.no_grad():
        expected = fitted.model.net(data.x[data.val_idx])[:, 0].numpy()
    assert summary["index"].tolist() == data.val_idx.tolist()
    np.testing.assert_allclose(summary["prediction"].to_numpy(), expected, rtol=1e-5)
    assert len(list((tmp_path / "predictions").glob("row_*.json"))) == len(data.val_idx)


# ------------------------------------------------------------------------------------------------------------
# extra commands
# ------------------------------------------------------------------------------------------------------------


def zeroshot(images: Path, findings: list[str], threshold: float = 0.5) -> dict:
    """Score images against free-text findings.

    Args:
        images: folder of images.
        findings: names of findings to score.
        threshold: decision threshold in [0, 1].
    """
    return {"images": images, "findings": findings, "threshold": threshold}


def test_commands_dispatch_with_typed_args(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = cli(
        LinearRegressor,
        SyntheticRegression,
        package=PKG,
        args=["zeroshot", "--images", str(tmp_path), "--findings", "[a, b]", "--threshold", "0.25"],
        commands={"zeroshot": zeroshot},
    )
    assert out == {"images": tmp_path, "findings": ["a", "b"], "threshold": 0.25}
    # The comma shorthand for list-of-string arguments, and the --name=value form.
    out = cli(
        LinearRegressor,
        SyntheticRegression,
        package=PKG,
        args=["zeroshot", f"--images={tmp_path}", "--findings", "pleural effusion, edema"],
        commands={"zeroshot": zeroshot},
    )
    assert out == {"images": tmp_path, "findings": ["pleural effusion", "edema"], "threshold": 0.5}
    with pytest.raises(SystemExit):
        cli(
            LinearRegressor,
            None,
            package=PKG,
            args=["zeroshot", "--threshold", "x"],
            commands={"zeroshot": zeroshot},
        )
    assert "threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli(
            LinearRegressor,
            SyntheticRegression,
            package=PKG,
            args=["--help"],
            commands={"zeroshot": zeroshot},
        )
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "zeroshot" in help_text and "Score images against free-text findings." in help_text


# ------------------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------------------


def test_warmup_cosine_known_values() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    schedule = WarmupCosineLR(
        optimizer, warmup_steps=4, total_steps=12, warmup_start_factor=0.2, min_lr_factor=0.1
    )
    lrs = []
    for _ in range(14):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected_warmup = [2.0 * (0.2 + 0.8 * s / 4) for s in range(4)]
    np.testing.assert_allclose(lrs[:4], expected_warmup, rtol=1e-12)
    assert lrs[4] == pytest.approx(2.0)  # end of warm-up: the full rate
    assert lrs[8] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # cosine half-way: (1 + cos(pi/2)) / 2
    assert lrs[6] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))))
    assert lrs[12] == pytest.approx(0.2) and lrs[13] == pytest.approx(0.2)  # held at min_lr_factor
    restored = WarmupCosineLR(optimizer, warmup_steps=1, total_steps=2)
    restored.load_state_dict(schedule.state_dict())
    assert restored.factor(6) == schedule.factor(6)
    with pytest.raises(MedzooDataError):
        WarmupCosineLR(optimizer, warmup_steps=5, total_steps=3)


def test_seeded_split_is_deterministic_disjoint_and_complete() -> None:
    parts = seeded_split(103, (0.7, 0.2, 0.1), seed=3)
    again = seeded_split(103, (0.7, 0.2, 0.1), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert [len(p) for p in parts] == [72, 21, 10]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined) == 103
    other = seeded_split(103, (0.7, 0.2, 0.1), seed=4)
    assert not np.array_equal(parts[0], other[0])
    assert [len(p) for p in seeded_split(10, (0.5, 0.2), seed=0)] == [5, 2]  # the rest is dropped
    with pytest.raises(MedzooDataError):
        seeded_split(10, (0.8, 0.8), seed=0)


def test_loaders_take_a_batch_size_override() -> None:
    data = MedzooDataModule(batch_size=4, seed=0)
    dataset = TensorDataset(torch.arange(10.0))
    assert [len(b[0]) for b in data.train_loader(dataset, batch_size=3)] == [3, 3, 3, 1]
    assert [len(b[0]) for b in data.train_loader(dataset)] == [4, 4, 2]
    assert [b[0].tolist() for b in data.eval_loader(dataset, batch_size=6)] == [
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        [6.0, 7.0, 8.0, 9.0],
    ]


def test_export_weights_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = LinearRegressor(in_features=3)
    path = model.export_weights(tmp_path / "sub" / "model.safetensors")
    loaded = load_file(path)
    state = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temporary file left


def test_epoch_seeded_sampler_depends_only_on_seed_and_epoch() -> None:
    from medzoo.lightning import EpochSeededSampler

    a, b = EpochSeededSampler(20, seed=1), EpochSeededSampler(20, seed=1, epoch=5)
    a.set_epoch(5)
    assert list(a) == list(b) and sorted(a) == list(range(20))
    a.set_epoch(6)
    assert list(a) != list(b)


# ------------------------------------------------------------------------------------------------------------
# The contract's verbs: a second Lightning stage, --help listing, `--ckpt_path last`
# ------------------------------------------------------------------------------------------------------------


def test_stage_runs_a_second_lightning_cli_and_help_lists_every_verb(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from medzoo.lightning import Stage

    commands = {
        "finetune": Stage(LinearRegressor, SyntheticRegression, "fine-tune the regressor"),
        "zeroshot": zeroshot,
    }
    result = cli(
        LinearRegressor,
        SyntheticRegression,
        package=PKG,
        args=["finetune", "fit", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1", *OPT],
        commands=commands,
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and result.trainer.current_epoch == 1
    with pytest.raises(SystemExit) as exit_:
        cli(LinearRegressor, SyntheticRegression, package=PKG, args=["--help"], commands=commands)
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "finetune" in text and "fine-tune the regressor" in text
    assert "zeroshot" in text and "Score images against free-text findings." in text


def test_last_follows_every_epoch_after_the_monitor_stops_improving(tmp_path: Path) -> None:
    """With lr 0 the validation loss never improves after epoch 0: best.ckpt stays at epoch 0 while
    last.ckpt (what `fit --ckpt_path last` resumes from) is the newest state. Plain Lightning 2.6 leaves
    last.ckpt at epoch 0."""
    run_cli(tmp_path, "--trainer.max_epochs=3", "--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=0")
    ckpts = tmp_path / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=True, map_location="cpu")
    best = torch.load(ckpts / "best.ckpt", weights_only=True, map_location="cpu")
    assert (last["epoch"], last["global_step"]) == (2, 18)
    assert (best["epoch"], best["global_step"]) == (0, 6)
    resumed = run_cli(tmp_path, "--trainer.max_epochs=4", "--ckpt_path=last", *OPT)
    assert resumed.trainer.global_step == 24  # continued after epoch 2, not after epoch 0


def test_ckpt_path_best_for_lightning_verbs_and_commands(tmp_path: Path) -> None:
    from medzoo.lightning import resolve_ckpt_path

    # Two epochs that improve val/mse, then two at lr 0 (a cosine over 2 epochs) that cannot: best is
    # epoch 1, last epoch 3; a resumed run continues after epoch 3.
    schedule = [
        "--model.scheduler=medzoo.lightning.WarmupCosineLR",
        "--model.scheduler.warmup_steps=1",
        "--model.scheduler.total_steps=2",
    ]
    fitted = run_cli(tmp_path, "--trainer.max_epochs=2", *OPT, *schedule)
    resumed = run_cli(tmp_path, "--trainer.max_epochs=4", "--ckpt_path=last", *OPT, *schedule)
    assert resumed.trainer.global_step == 24
    best_path = resolve_ckpt_path("best", tmp_path)
    assert best_path == tmp_path / "checkpoints" / "best.ckpt"
    assert torch.load(best_path, weights_only=True)["epoch"] == 1
    assert torch.load(resolve_ckpt_path("last", tmp_path), weights_only=True)["epoch"] == 3
    validated = run_cli(tmp_path, "--ckpt_path=best", verb="validate")
    assert Path(validated.trainer.ckpt_path) == best_path
    a, b = weights(fitted.model), weights(validated.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(MedzooDataError, match=r"best.*no such file"):
        run_cli(tmp_path / "elsewhere", "--ckpt_path=best", verb="validate")
    moved = tmp_path / "moved"
    run_cli(moved, "--trainer.max_epochs=1", f"--checkpoint.dirpath={moved / 'ck'}", *OPT)
    tested = run_cli(moved, "--ckpt_path=best", f"--checkpoint.dirpath={moved / 'ck'}", verb="validate")
    assert Path(tested.trainer.ckpt_path) == moved / "ck" / "best.ckpt"


def test_ckpt_path_last_and_resolve_ckpt_path(tmp_path: Path) -> None:
    from medzoo.lightning import resolve_ckpt_path

    fitted = run_cli(tmp_path, "--trainer.max_epochs=1", *OPT)
    assert resolve_ckpt_path("last", tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    validated = run_cli(tmp_path, "--ckpt_path=last", verb="validate")
    a, b = weights(fitted.model), weights(validated.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(MedzooDataError, match="no such file"):
        resolve_ckpt_path("last", tmp_path / "elsewhere")

"""WarmupCosineLR's warm-up modes and schedules that follow the trainer (max_epochs, max_steps, max_time)."""

from __future__ import annotations

import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medzoo.errors import MedzooDataError
from medzoo.lightning import WarmupCosineLR, follow_trainer


def mmcv_lr(
    base: float, epoch: int, iteration: int, max_epochs: int, warmup_iters: int, ratio: float
) -> float:
    """mmcv CosineAnnealingLrUpdaterHook (by epoch, min_lr 0) with a linear warm-up by iteration."""
    regular = 0.5 * base * (1 + math.cos(math.pi * epoch / max_epochs))
    if iteration >= warmup_iters:
        return regular
    k = (1 - iteration / warmup_iters) * (1 - ratio)
    return regular * (1 - k)


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(optimizer, schedule, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


def test_multiply_mode_equals_mmcv_cosine_with_linear_warmup() -> None:
    steps_per_epoch, epochs, warmup_epochs = 3, 20, 5
    optimizer = _optimizer(4.5e-4)
    schedule = WarmupCosineLR(
        optimizer,
        warmup_steps=warmup_epochs * steps_per_epoch,
        total_steps=epochs * steps_per_epoch,
        warmup_start_factor=1e-5,
        warmup_mode="multiply",
    )
    schedule.bind(epochs * steps_per_epoch, steps_per_epoch)
    assert schedule.anneal_per_epoch is False
    per_step = _lrs(optimizer, schedule, epochs * steps_per_epoch)
    # at every epoch start the per-step cosine equals mmcv's per-epoch one
    for epoch in range(epochs):
        i = epoch * steps_per_epoch
        expected = mmcv_lr(4.5e-4, epoch, i, epochs, warmup_epochs * steps_per_epoch, 1e-5)
        assert per_step[i] == pytest.approx(expected, rel=1e-12, abs=1e-18)
    # sequential (the default) differs: it warms up to 1 and anneals over the remaining steps only
    sequential = WarmupCosineLR(_optimizer(), warmup_steps=15, total_steps=60, warmup_start_factor=1e-5)
    assert sequential.factor(30) == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 45)))
    assert schedule.factor(30) == pytest.approx(0.5 * (1 + math.cos(math.pi * 30 / 60)))


def test_anneal_per_epoch_holds_the_cosine_within_an_epoch_like_mmcv() -> None:
    steps_per_epoch, epochs, warmup = 4, 10, 8
    optimizer = _optimizer(2.0)
    schedule = WarmupCosineLR(
        optimizer, warmup_mode="multiply", warmup_epochs=2, warmup_start_factor=0.1, anneal_per_epoch=True
    )
    schedule.bind(epochs * steps_per_epoch, steps_per_epoch)
    assert schedule.warmup_steps == warmup
    lrs = _lrs(optimizer, schedule, epochs * steps_per_epoch)
    for i, lr in enumerate(lrs):
        assert lr == pytest.approx(mmcv_lr(2.0, i // steps_per_epoch, i, epochs, warmup, 0.1), rel=1e-12)


def test_time_budget_anneals_by_elapsed_time_and_state_is_portable() -> None:
    optimizer = _optimizer()
    schedule = WarmupCosineLR(optimizer, warmup_steps=0, warmup_mode="multiply")
    now = [0.0]
    schedule.bind(math.inf, None, clock=lambda: now[0], time_budget_s=100.0)
    now[0] = 25.0
    assert schedule.factor(3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    now[0] = 150.0
    assert schedule.factor(4) == 0.0  # past the budget: held at min_lr_factor
    state = schedule.state_dict()
    assert "_clock" not in state
    torch.save(state, buffer := __import__("io").BytesIO())
    buffer.seek(0)
    restored = WarmupCosineLR(_optimizer(), warmup_mode="multiply")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.time_budget_s == 100.0 and restored._clock is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(MedzooDataError, match="warmup_mode"):
        WarmupCosineLR(_optimizer(), 1, 5, warmup_mode="linear")
    with pytest.raises(MedzooDataError, match="warmup_epochs"):
        WarmupCosineLR(_optimizer(), warmup_epochs=-1)
    schedule = WarmupCosineLR(_optimizer(), warmup_epochs=10)
    with pytest.raises(MedzooDataError, match="warm-up of 40 steps"):
        schedule.bind(20, 4)
    with pytest.raises(MedzooDataError, match="run length"):
        WarmupCosineLR(_optimizer()).bind(math.inf, None)


# -- with a trainer -----------------------------------------------------------------------------------------


class _Regressor(pl.LightningModule):
    def __init__(self, schedule: dict) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.schedule = schedule
        self.seen: list[float] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.layer(batch[0]).square().mean()

    def test_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
        scheduler = WarmupCosineLR(optimizer, **self.schedule)
        config = {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return follow_trainer(config, self.trainer)


def _loader(n: int = 12, batch_size: int = 2) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=batch_size)


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("limits", "total"),
    [
        ({"max_epochs": 4}, 24),
        ({"max_steps": 10, "max_epochs": -1}, 10),
        ({"max_steps": 9, "max_epochs": 4}, 9),
    ],
)
def test_follow_trainer_anneals_over_the_run_the_trainer_will_make(tmp_path, limits, total) -> None:
    module = _Regressor({"warmup_epochs": 1, "warmup_start_factor": 0.1, "warmup_mode": "multiply"})
    _trainer(tmp_path, **limits).fit(module, _loader())
    scheduler = module.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == total and scheduler.warmup_steps == 6  # 6 batches per epoch
    assert len(module.seen) == total
    for step, lr in enumerate(module.seen):
        warm = 0.1 + 0.9 * step / 6 if step < 6 else 1.0
        assert lr == pytest.approx(warm * 0.5 * (1 + math.cos(math.pi * step / total)), rel=1e-12)


def test_explicit_total_steps_is_kept_and_epoch_interval_refuses_trainer_lengths(tmp_path) -> None:
    module = _Regressor({"warmup_steps": 2, "total_steps": 100})
    _trainer(tmp_path, max_epochs=1).fit(module, _loader())
    assert module.trainer.lr_scheduler_configs[0].scheduler.total_steps == 100
    optimizer = _optimizer()
    config = {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": WarmupCosineLR(optimizer), "interval": "epoch"},
    }
    with pytest.raises(MedzooDataError, match="'step'"):
        follow_trainer(config, module.trainer)


def test_max_time_run_binds_the_timer_and_later_loads_do_not_warn(tmp_path) -> None:
    module = _Regressor({"warmup_steps": 0, "warmup_mode": "multiply"})
    trainer = _trainer(tmp_path, max_time={"seconds": 30}, max_epochs=-1, max_steps=8)
    trainer.fit(module, _loader())
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.time_budget_s == 30 and scheduler._clock is not None
    assert scheduler.total_steps == 8  # max_steps ends the run first here
    checkpoint = tmp_path / "time.ckpt"
    trainer.save_checkpoint(checkpoint)
    assert "Timer" in torch.load(checkpoint, weights_only=True)["callbacks"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        import medzoo.lightning.trainer as trainer_module

        warnings.filterwarnings("ignore", message=trainer_module.TIMER_STATE_WARNING, category=UserWarning)
        _trainer(tmp_path).test(_Regressor({}), _loader(), ckpt_path=checkpoint, weights_only=False)
    assert not [w for w in caught if "Please add the following callbacks" in str(w.message)]

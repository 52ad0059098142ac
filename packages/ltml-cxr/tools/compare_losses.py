"""Train and test the demo with each of the six losses over several seeds; print head/medium/tail mAP.

    python packages/ltml-cxr/tools/compare_losses.py --seeds 0 1 2 --out runs/ltml-cxr-compare

Each run is ``ltml-cxr fit --config demo --model.loss L --seed_everything S --data.seed S`` followed by
``ltml-cxr test --ckpt_path best`` (model selection on the validation mAP, as in the paper), on the same
generated data set. Writes ``<out>/results.csv`` (one row per run) and prints a Markdown table of the mean and
standard deviation over seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ltml_cxr.cli import main as ltml_cxr
from ltml_cxr.models import LOSS_NAMES

METRICS = ("mAP_head", "mAP_medium", "mAP_tail", "mAP_all", "auc_macro_all", "f1_macro_all")
COLUMNS = (*METRICS, "share_ap_above_prevalence")


def run(loss: str, seed: int, out: Path, extra: list[str]) -> dict[str, float]:
    root = out / f"{loss}-seed{seed}"
    common = [
        "--config", "demo", "--model.loss", loss, "--seed_everything", str(seed), "--data.seed", str(seed),
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", *extra,
    ]  # fmt: skip
    ltml_cxr(["fit", *common])
    ltml_cxr(["test", *common, "--ckpt_path", "best"])  # <root>/checkpoints/best.ckpt
    logs = pd.concat(pd.read_csv(p) for p in sorted((root / "csv").glob("version_*/metrics.csv")))
    logs = logs.rename(columns={"test/mAP": "test/mAP_all"})
    last = {name: logs[f"test/{name}"].dropna().iloc[-1] for name in METRICS if f"test/{name}" in logs}
    final = {key: logs[key].dropna().iloc[-1] for key in logs if key.startswith("test/AP_")}
    above = [
        value > logs[key.replace("/AP_", "/prevalence_")].dropna().iloc[-1] for key, value in final.items()
    ]
    return {"loss": loss, "seed": seed, **last, "share_ap_above_prevalence": sum(above) / max(1, len(above))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=list(LOSS_NAMES))
    parser.add_argument("--out", type=Path, default=Path("runs/ltml-cxr-compare"))
    parser.add_argument("extra", nargs="*", help="further CLI arguments for fit and test")
    args = parser.parse_args()
    rows = [run(loss, seed, args.out, args.extra) for seed in args.seeds for loss in args.losses]
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "results.csv", index=False)
    columns = [m for m in COLUMNS if m in table]
    summary = table.groupby("loss", sort=False)[columns].agg(["mean", "std"])
    print("| loss | " + " | ".join(columns) + " |")
    print("|---" * (1 + len(summary.columns) // 2) + "|")
    for loss, row in summary.iterrows():
        cells = [f"{row[(m, 'mean')]:.3f} ± {row[(m, 'std')]:.3f}" for m in columns]
        print(f"| {loss} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""HySparK benchmark: sparse (spconv) vs masked-dense vs plain dense encoder, and the full pre-training step.

Measures, side by side in one run:
  - encoder forward+backward time and peak memory at the ``tiny`` and ``paper`` sizes, mask ratios
    0 / .5 / .75 / .9, for the ``dense`` backend (masked dense compute), the ``spconv`` backend (Native
    rulebooks on CPU; on a GPU where one is present), and a plain dense encoder (no mask at all);
  - one full pre-training step (forward, backward, clip, AdamW) at 96^3, batch 1, mask .75, beside the
    reference implementation's 65.8 s (its official model, batch 1, 2 CPU threads).

Each measurement runs in a fresh process so that peak memory (CPU: peak RSS growth; CUDA: peak allocated)
belongs to it alone. Usage: ``python benchmarks/hyspark.py [--repeats N] [--sizes tiny,paper] [--threads 2]``.
Writes ``benchmarks/results/hyspark.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

REFERENCE_STEP_S = 65.8  # the reference HySparK, 96^3, batch 1, mask .75, 2 CPU threads (issue measurement)
RATIOS = (0.0, 0.5, 0.75, 0.9)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _measure(task: dict) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    import torch

    from hyspark.models import create_hyspark

    torch.set_num_threads(task["threads"])
    torch.manual_seed(0)
    device = torch.device(task["device"])
    size = task["size"]
    model = create_hyspark(size, backend=task.get("backend", "dense"), mask_ratio=task.get("ratio", 0.75))
    model = model.to(device)
    s = model.encoder.img_size
    x = torch.rand(1, 1, s, s, s, device=device)
    cells = model.generate_mask(1, device, generator=torch.Generator().manual_seed(0))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if task["kind"] == "encoder":
        encoder = model.encoder
        variant = task["variant"]

        def run():
            active = None if variant == "plain" else cells  # plain: no mask, every voxel computed
            maps = encoder.forward_features(x, active, backend="dense" if variant == "plain" else variant)
            sum(m.float().pow(2).mean() for m in maps).backward()

    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.04)

        def run():
            optimizer.zero_grad(set_to_none=True)
            model(x, cells).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()

    for _ in range(task["warmup"]):
        run()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_mib()
    times = []
    for _ in range(task["repeats"]):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mib() - rss_before
    return {**task, "time_s": min(times), "times_s": times, "peak_mib": peak}


def _run(task: dict) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (task,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,paper")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paper-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "hyspark.json"))
    args = parser.parse_args()

    import torch

    from hyspark.models import spconv_available

    device = "cuda" if torch.cuda.is_available() else "cpu"
    variants = ["dense"] + (["spconv"] if spconv_available() else [])
    rows = []
    for size in args.sizes.split(","):
        repeats = args.paper_repeats if size == "paper" else args.repeats
        base = {
            "kind": "encoder",
            "size": size,
            "device": device,
            "threads": args.threads,
            "repeats": repeats,
        }
        # Warm-up runs are skipped at paper size on CPU (each costs as much as a measurement); the
        # minimum over repeats is reported.
        base["warmup"] = 0 if (size == "paper" and device == "cpu") else 1
        plain = _run({**base, "variant": "plain", "ratio": 0.0})
        rows.append(plain)
        print(f"[{size}] plain dense encoder: {plain['time_s']:.3f} s, peak {plain['peak_mib']:.0f} MiB")
        for variant in variants:
            for ratio in RATIOS:
                row = _run({**base, "variant": variant, "ratio": ratio})
                row["speedup_vs_plain"] = plain["time_s"] / row["time_s"]
                rows.append(row)
                print(
                    f"[{size}] {variant:6s} mask {ratio:.2f}: {row['time_s']:.3f} s "
                    f"({row['speedup_vs_plain']:.2f}x plain), peak {row['peak_mib']:.0f} MiB"
                )
        for ratio in RATIOS:
            pair = [
                r for r in rows if r["size"] == size and r.get("ratio") == ratio and r["variant"] in variants
            ]
            if len(pair) == 2:
                ratio_sd = pair[1]["time_s"] / pair[0]["time_s"]
                print(f"[{size}] mask {ratio:.2f}: spconv / dense time = {ratio_sd:.2f}")

    steps = []
    if "paper" in args.sizes.split(","):
        for backend in variants:
            task = {"kind": "step", "size": "paper", "backend": backend, "ratio": 0.75, "device": device,
                    "threads": args.threads, "repeats": args.paper_repeats, "warmup": 0}  # fmt: skip
            step = _run(task)
            step["reference_s"] = REFERENCE_STEP_S
            step["speedup_vs_reference"] = REFERENCE_STEP_S / step["time_s"]
            steps.append(step)
            print(
                f"[paper] full pre-training step, {backend}: {step['time_s']:.1f} s vs reference "
                f"{REFERENCE_STEP_S} s -> {step['speedup_vs_reference']:.2f}x"
            )

    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "device": device,
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        },
        "notes": "time_s = min over repeats of encoder forward+backward (or one full step), batch 1; "
        "peak_mib = peak RSS growth during the timed runs (CPU) or peak allocated (CUDA); "
        "spconv uses Native rulebooks (CPU).",
        "encoder": rows,
        "pretrain_step": steps,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.output).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

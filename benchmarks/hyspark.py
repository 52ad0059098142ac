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
import sys
import time
from pathlib import Path

# This file is named like the package: keep its folder off sys.path so `import hyspark` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

REFERENCE_STEP_S = 65.8  # the reference HySparK, 96^3, batch 1, mask .75, 2 CPU threads (issue measurement)
RATIOS = (0.0, 0.5, 0.75, 0.9)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _setup(size: str, threads: int, device_name: str):
    import warnings

    warnings.simplefilter("ignore")
    import torch

    from hyspark.models import create_hyspark

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device_name)
    model = create_hyspark(size).to(device)
    s = model.encoder.img_size
    x = torch.rand(1, 1, s, s, s, device=device)
    return torch, model, x, device


def _encoder_runner(torch, model, x, device, variant: str, ratio: float):
    model.mask_ratio = ratio
    cells = model.generate_mask(1, device, generator=torch.Generator().manual_seed(0))
    active = None if variant == "plain" else cells  # plain: no mask, every voxel computed
    backend = "dense" if variant == "plain" else variant

    def run():
        maps = model.encoder.forward_features(x, active, backend=backend)
        sum(m.float().pow(2).mean() for m in maps).backward()

    return run


def _step_runner(torch, model, x, device, backend: str):
    model.mask_ratio = 0.75
    model.encoder.backend = backend
    cells = model.generate_mask(1, device, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.04)

    def run():
        optimizer.zero_grad(set_to_none=True)
        model(x, cells).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return run


def _time_round_robin(task: dict) -> dict:
    """Times every case of one size in ONE process, interleaved round by round, so that load from other
    jobs on a shared machine hits all cases alike; reports the minimum over rounds."""
    torch, model, x, device = _setup(task["size"], task["threads"], task["device"])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    runners = {}
    for case in task["cases"]:
        if case[0] == "step":
            runners[case] = _step_runner(torch, model, x, device, case[1])
        else:
            runners[case] = _encoder_runner(torch, model, x, device, case[0], case[1])
    times: dict = {case: [] for case in runners}
    for round_index in range(task["warmup"] + task["rounds"]):
        for case, run in runners.items():
            start = time.perf_counter()
            run()
            sync()
            if round_index >= task["warmup"]:
                times[case].append(time.perf_counter() - start)
    return {case: ts for case, ts in times.items()}


def _peak_memory(task: dict) -> float:
    """Peak memory of one run of one case, alone in its process (CPU: RSS growth; CUDA: peak allocated)."""
    torch, model, x, device = _setup(task["size"], task["threads"], task["device"])
    variant, ratio = task["case"]
    run = _encoder_runner(torch, model, x, device, variant, ratio)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mib()
    run()
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _rss_mib() - before


def _in_process(function, task):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, (task,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,paper")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds at tiny size")
    parser.add_argument("--paper-rounds", type=int, default=1, help="timing rounds at paper size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case peak memory processes")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "hyspark.json"))
    args = parser.parse_args()

    import torch

    from hyspark.models import spconv_available

    device = "cuda" if torch.cuda.is_available() else "cpu"
    variants = ["dense"] + (["spconv"] if spconv_available() else [])
    rows, steps = [], []
    for size in args.sizes.split(","):
        paper = size == "paper"
        cases = [("plain", 0.0)] + [(v, r) for v in variants for r in RATIOS]
        if paper:
            cases += [("step", backend) for backend in variants]
        task = {
            "size": size, "threads": args.threads, "device": device, "cases": cases,
            "rounds": args.paper_rounds if paper else args.rounds,
            # At paper size on CPU a warm-up costs as much as a measurement: the first round is timed.
            "warmup": 0 if (paper and device == "cpu") else 1,
        }  # fmt: skip
        times = _in_process(_time_round_robin, task)
        plain = min(times[("plain", 0.0)])
        for case in cases:
            best = min(times[case])
            if case[0] == "step":
                steps.append({
                    "size": size, "backend": case[1], "mask_ratio": 0.75, "time_s": best,
                    "times_s": times[case], "reference_s": REFERENCE_STEP_S,
                    "speedup_vs_reference": REFERENCE_STEP_S / best,
                })  # fmt: skip
                print(f"[{size}] full pre-training step, {case[1]}: {best:.1f} s vs reference "
                      f"{REFERENCE_STEP_S} s -> {REFERENCE_STEP_S / best:.2f}x")  # fmt: skip
                continue
            row = {"size": size, "variant": case[0], "mask_ratio": case[1], "time_s": best,
                   "times_s": times[case], "speedup_vs_plain": plain / best}  # fmt: skip
            if not args.no_memory:
                row["peak_mib"] = _in_process(_peak_memory, {**task, "case": case})
            rows.append(row)
            memory = f", peak {row['peak_mib']:.0f} MiB" if "peak_mib" in row else ""
            label = f"[{size}] {case[0]:6s} mask {case[1]:.2f}"
            print(f"{label}: {best:.3f} s ({plain / best:.2f}x plain){memory}")
        if len(variants) == 2:
            for ratio in RATIOS:
                ratio_sd = min(times[("spconv", ratio)]) / min(times[("dense", ratio)])
                print(f"[{size}] mask {ratio:.2f}: spconv / dense time = {ratio_sd:.2f}")

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
        "notes": "time_s = min over interleaved rounds of encoder forward+backward (or one full pre-training "
        "step), batch 1; peak_mib = peak RSS growth of one run alone in a fresh process (CPU) or peak "
        "allocated (CUDA); spconv uses Native rulebooks.",
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

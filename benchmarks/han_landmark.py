"""HAN benchmark: Bi-Level Routing Attention against full global attention, and whole-model cost.

Measured side by side in one run (random weights; speed does not depend on them):
  1. BRA vs full global multi-head attention at the paper's stage shapes (stages 1-4: widths 64/128/320/512,
     heads 2/4/10/16, n_win 16/16/16/8, topk 1/4/8/16, K/V pooled to 4x4 per region) for 512x512 and
     1216x1024 (H x W) inputs: forward+backward time and peak memory of one attention layer (batch 1). Both
     use the same module with the attention matrix materialised (fused_attention=False), so the comparison
     is like for like. Where the full attention's matrices (scores, softmax, their gradients: ~3 x heads x
     N^2 x 4 bytes) exceed --memory-cap-gb it is reported "infeasible" with that estimate. Attention FLOPs
     (QK^T and AV) are given analytically for both.
  2. Whole-model inference latency (paper config, K = 19) at 512x512 and 1216x1024, and the tiny config at
     the demo's 128x128.
  3. Training step time (forward, backward, AdamW step; batch 1) of the paper config at 512x512 (and at
     1216x1024 with --full-size-train), and of the tiny config at 128x128 with batch 4.

On CPU, peak memory is the peak resident set size growth of a fresh process per measurement; on CUDA it is
torch.cuda.max_memory_allocated. Writes benchmarks/results/han_landmark.json.

    python benchmarks/han_landmark.py [--device cuda] [--repeats 3] [--memory-cap-gb 2.5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

# This file is named like the package: drop its folder from the import path so that `han_landmark` is the
# installed package, here and in the spawned measurement processes.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "han_landmark.json"
STAGES = [  # (width, heads, n_win, topk) of HAN stages 1-4 (stage 5 is global attention in both variants)
    (64, 2, 16, 1),
    (128, 4, 16, 4),
    (320, 10, 16, 8),
    (512, 16, 8, 16),
]
KV_PER_WIN = 4
INPUTS = {"512x512": (512, 512), "1216x1024": (1216, 1024)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_and_memory(step, device: torch.device, repeats: int) -> dict:
    """Median seconds of ``step()`` over ``repeats`` after one warm-up, and the peak memory growth (MB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = _rss_mb()
    step()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb()
    return {"seconds": statistics.median(times), "peak_memory_mb": round(peak - base, 1)}


def _attention_job(
    kind: str, hw: tuple[int, int], stage: int, device: str, repeats: int, threads: int
) -> dict:
    from han_landmark.models import BiLevelRoutingAttention

    torch.set_num_threads(threads)
    dev = torch.device(device)
    width, heads, n_win, topk = STAGES[stage]
    attention = BiLevelRoutingAttention(
        width, num_heads=heads, n_win=n_win, topk=topk if kind == "bra" else -2, kv_per_win=KV_PER_WIN,
        fused_attention=False,
    ).to(dev)  # fmt: skip
    x = torch.randn(1, *hw, width, device=dev, requires_grad=True)

    def step() -> None:
        attention(x).sum().backward()
        x.grad = None
        attention.zero_grad(set_to_none=True)

    return _time_and_memory(step, dev, repeats)


def _model_job(
    variant: str, hw: tuple[int, int], batch: int, train: bool, device: str, repeats: int, threads: int
):
    from han_landmark.models import create_model

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = create_model(variant).to(dev)
    image = torch.randn(batch, 3, *hw, device=dev)
    if not train:
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(image)

        return _time_and_memory(step, dev, repeats)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = sum(h.square().mean() for h in model(image))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _time_and_memory(step, dev, repeats)


def _isolated(fn, *args) -> dict:
    """Run ``fn(*args)`` in a fresh process on CPU (so its peak RSS is its own), in-process on CUDA."""
    device = args[-3]
    if device.startswith("cuda"):
        return fn(*args)
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


def attention_estimates(hw: tuple[int, int], stage: int) -> dict:
    """Analytic attention FLOPs and attention-matrix memory (fwd+bwd, float32) of BRA and full attention."""
    width, heads, n_win, topk = STAGES[stage]
    h, w = hw[0] // 2 ** (stage + 1), hw[1] // 2 ** (stage + 1)
    tokens = h * w
    regions = n_win**2
    keys_bra = topk * KV_PER_WIN**2
    return {
        "tokens": tokens,
        "full_attention_gflops": 2 * 2 * tokens * tokens * width / 1e9,
        "bra_attention_gflops": (2 * 2 * tokens * keys_bra * width + 2 * regions * regions * width) / 1e9,
        "full_attention_matrix_mb": 3 * heads * tokens * tokens * 4 / 2**20,
        "bra_attention_matrix_mb": 3 * heads * tokens * keys_bra * 4 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory-cap-gb", type=float, default=2.5)
    parser.add_argument("--full-size-train", action="store_true", help="also time training at 1216x1024")
    args = parser.parse_args()
    device, repeats, threads = args.device, args.repeats, args.threads
    cap_mb = args.memory_cap_gb * 1024

    attention_rows = []
    print(f"BRA vs full attention (batch 1, fwd+bwd, {device}, {threads} threads, median of {repeats})")
    print(f"{'input':>10} {'stage':>5} {'tokens':>7} {'BRA s':>8} {'full s':>10} {'time x':>7} "
          f"{'BRA MB':>8} {'full MB':>16} {'mem x':>7} {'FLOPs x':>8}")  # fmt: skip
    for name, hw in INPUTS.items():
        for stage in range(len(STAGES)):
            size = (hw[0] // 2 ** (stage + 1), hw[1] // 2 ** (stage + 1))
            est = attention_estimates(hw, stage)
            bra = _isolated(_attention_job, "bra", size, stage, device, repeats, threads)
            row = {"input": name, "stage": stage + 1, "shape_hw": size, **est, "bra": bra}
            if est["full_attention_matrix_mb"] > cap_mb:
                row["full"] = {
                    "infeasible": True,
                    "needs_mb_estimate": round(est["full_attention_matrix_mb"]),
                }
                full_s, full_mb = "infeasible", f">{est['full_attention_matrix_mb'] / 1024:.0f} GB needed"
                time_ratio = mem_ratio = None
            else:
                row["full"] = _isolated(_attention_job, "full", size, stage, device, repeats, threads)
                time_ratio = row["full"]["seconds"] / bra["seconds"]
                mem_ratio = row["full"]["peak_memory_mb"] / max(bra["peak_memory_mb"], 1e-3)
                full_s, full_mb = f"{row['full']['seconds']:.3f}", f"{row['full']['peak_memory_mb']:.0f}"
            row["full_over_bra_time"] = time_ratio
            row["full_over_bra_memory"] = mem_ratio
            row["full_over_bra_flops"] = est["full_attention_gflops"] / est["bra_attention_gflops"]
            attention_rows.append(row)
            print(f"{name:>10} {stage + 1:>5} {est['tokens']:>7} {bra['seconds']:>8.3f} {full_s:>10} "
                  f"{'' if time_ratio is None else f'{time_ratio:.1f}':>7} {bra['peak_memory_mb']:>8.0f} "
                  f"{full_mb:>16} {'' if mem_ratio is None else f'{mem_ratio:.1f}':>7} "
                  f"{row['full_over_bra_flops']:>8.0f}", flush=True)  # fmt: skip

    model_rows = []
    jobs = [
        ("inference", "paper", INPUTS["512x512"], 1, False),
        ("inference", "paper", INPUTS["1216x1024"], 1, False),
        ("inference", "tiny", (128, 128), 1, False),
        ("train_step", "paper", INPUTS["512x512"], 1, True),
        ("train_step", "tiny", (128, 128), 4, True),
    ]
    if args.full_size_train:
        jobs.append(("train_step", "paper", INPUTS["1216x1024"], 1, True))
    print(f"\nwhole model ({device}, {threads} threads, median of {repeats})")
    for what, variant, hw, batch, train in jobs:
        result = _isolated(_model_job, variant, hw, batch, train, device, repeats, threads)
        model_rows.append({"what": what, "variant": variant, "input_hw": hw, "batch": batch, **result})
        print(f"{what:>10} {variant:>5} {hw[0]}x{hw[1]} batch {batch}: {result['seconds']:.3f} s/step, "
              f"peak +{result['peak_memory_mb']:.0f} MB", flush=True)  # fmt: skip
    small, large = model_rows[0]["seconds"], model_rows[1]["seconds"]
    print(
        f"paper-model latency 1216x1024 / 512x512 = {large / small:.2f} (pixels x{1216 * 1024 / 512**2:.2f})"
    )

    from medzoo.io import write_json

    write_json(
        RESULTS,
        {
            "benchmark": "han_landmark",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "device": device,
                "cpu": platform.processor() or platform.machine(),
                "threads": threads,
                "torch": torch.__version__,
                "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            },
            "repeats": repeats,
            "memory_cap_gb": args.memory_cap_gb,
            "attention": attention_rows,
            "models": model_rows,
        },
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

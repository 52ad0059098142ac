"""The one benchmark harness every script in benchmarks/ uses.

- :func:`compare`: warm every case up, then time them in interleaved rounds (case A, B, C, A, B, C, ...), so
  that load from elsewhere on a shared machine hits all cases alike; report the median per case.
- :func:`peak_memory_mib`: one peak-memory measure for all scripts: the peak RSS growth over one call, with
  freed memory trimmed first and the peak reset through ``/proc/self/clear_refs`` (CPU), or
  ``torch.cuda.max_memory_allocated`` (CUDA).
- :func:`claim`: one efficiency claim of a paper as a ratio measured in this run (baseline / candidate).
- :func:`write_results`: ``benchmarks/results/<name>.json`` (atomic) with the machine it ran on;
  ``_summary.py`` collects every file's claims into ``results/SUMMARY.md``.

Every script takes ``--quick`` (small sizes, seconds), ``--repeats`` and ``--threads`` (:func:`parse_args`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--quick``, ``--repeats N`` (default 3; at least 3 are taken) and ``--threads N`` (default 2)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds); what CI runs")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (>= 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)
    args.repeats = max(3, args.repeats)
    import torch

    torch.set_num_threads(args.threads)
    return args


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def compare(
    cases: dict[str, Callable[[], Any]], repeats: int = 3, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Time each case: ``warmup`` untimed calls each, then ``repeats`` interleaved rounds.

    Returns:
        ``{name: {"median_s": float, "times_s": [float, ...]}}``.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    _sync()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(max(3, repeats)):
        for name, fn in cases.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "times_s": t} for name, t in times.items()}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":")) / 1024.0


def peak_memory_mib(fn: Callable[[], Any], device: str = "cpu") -> float:
    """Peak memory of one call of ``fn`` in MiB, measured in this process.

    CPU (Linux, glibc): freed memory is first handed back to the system (``gc.collect`` and
    ``malloc_trim(0)``), the peak RSS (``VmHWM``) is reset to the current RSS through
    ``/proc/self/clear_refs``, ``fn`` runs once, and the result is the new peak minus the RSS before the call:
    what the call itself allocated, inputs and weights already built excluded. (Forking a child per
    measurement was tried first: a fork after a multi-threaded backward pass deadlocks in OpenMP.)
    CUDA: the growth of ``torch.cuda.max_memory_allocated`` over the call.
    """
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current RSS
    before = _status_mib("VmRSS")
    fn()
    return max(0.0, _status_mib("VmHWM") - before)


def claim(
    name: str, baseline: str, candidate: str, baseline_value: float, candidate_value: float, unit: str
) -> dict[str, Any]:
    """A paper's efficiency claim measured in this run: ``ratio = baseline_value / candidate_value``.

    A ratio above 1 means the candidate (the paper's method) needs less time or memory than the baseline.
    """
    return {
        "claim": name,
        "baseline": baseline,
        "candidate": candidate,
        "unit": unit,
        "baseline_value": baseline_value,
        "candidate_value": candidate_value,
        "ratio": baseline_value / candidate_value if candidate_value else float("nan"),
    }


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "python": sys.version.split()[0],
    }


def write_results(name: str, payload: dict[str, Any], quick: bool) -> Path:
    """Write ``results/<name>.json`` (``<name>.quick.json`` for ``--quick``) atomically and return it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")
    body = {"benchmark": name, "quick": quick, "machine": machine(), **payload}
    fd, tmp = tempfile.mkstemp(dir=RESULTS, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle, indent=2, default=float)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` as an aligned text table."""
    if not rows:
        return
    columns = list(columns or rows[0].keys())

    def text(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    widths = [max(len(c), *(len(text(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(text(row.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))

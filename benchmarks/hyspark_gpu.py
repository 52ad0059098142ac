"""HySparK on one CUDA GPU: spconv (implicit GEMM) against dense, correctness first, then speed and memory.

A ready check for a machine with a GPU (it has not run yet: see the hyspark README). Without CUDA (or
without spconv) it prints why and exits 0, so the CPU loop over ``benchmarks/*.py --quick`` passes it by.

On a GPU, in one process (about 3-5 minutes on a recent GPU):

1. correctness, fp32 (TF32 off): the ``paper`` encoder at 96^3, batch 2, mask .75, spconv against dense on
   CUDA; every output map and every parameter and input gradient must match to fp32 tolerance, else the
   script exits 1 (after writing what it measured);
2. the encoder forward + backward at 96^3, batch 4, for mask 0 / .5 / .75 / .9, spconv against dense, under
   fp16 and bf16 autocast: interleaved medians (``benchmarks/_harness.py``), ratios dense / spconv, peak CUDA
   memory of one call;
3. the full pre-training step (forward, backward, clip, AdamW) at the same settings.

Writes ``benchmarks/results/hyspark_gpu.json`` (``.quick.json`` with ``--quick``: batch 2, masks .75 only).
The goal it checks against: the spconv encoder at least 2.5x faster than dense at mask .75, with peak
memory well below dense.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's folder goes to the END of sys.path, so that `import hyspark` finds the installed package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

RATIOS = (0.0, 0.5, 0.75, 0.9)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# The one device this check measures: every tensor, the model and autocast follow it.
DEVICE = torch.device("cuda")


def unavailable() -> str | None:
    """Why this check cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    from hyspark.models import spconv_available

    if not spconv_available():
        return "spconv is not installed (pip install 'hyspark[cuda]')"
    return None


def check_equivalence(model, batch: int) -> list[dict]:
    """spconv against dense on CUDA in fp32: max abs difference of maps and gradients, per tensor."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model.mask_ratio = 0.75
    size = model.encoder.img_size
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, size, generator=generator).to(DEVICE)
    cells = model.generate_mask(batch, DEVICE, generator=generator)
    results = {}
    weights = None
    for backend in ("dense", "spconv"):
        x_in = x.clone().requires_grad_(True)
        maps = model.encoder.forward_features(x_in, cells, backend=backend)
        if weights is None:
            weights = [torch.randn(m.shape, generator=generator).to(DEVICE) for m in maps]
        objective = sum((m * w).sum() for m, w in zip(maps, weights, strict=True))
        grads = torch.autograd.grad(objective, [x_in, *model.encoder.parameters()])
        results[backend] = ([m.detach() for m in maps], grads)
    names = ["input", *(n for n, _ in model.encoder.named_parameters())]
    rows = []
    for kind, a_list, b_list, labels in (
        ("map", results["dense"][0], results["spconv"][0], [f"map{i}" for i in range(5)]),
        ("grad", results["dense"][1], results["spconv"][1], names),
    ):
        for label, a, b in zip(labels, a_list, b_list, strict=True):
            scale = float(a.abs().max()) or 1.0
            diff = float((a - b).abs().max())
            rows.append({"kind": kind, "tensor": label, "max_abs_diff": diff, "rel_to_max": diff / scale})
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return rows


def encoder_case(model, x: torch.Tensor, backend: str, ratio: float, dtype: torch.dtype):
    model.mask_ratio = ratio
    cells = model.generate_mask(x.shape[0], x.device, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        with torch.autocast(DEVICE.type, dtype=dtype):
            maps = model.encoder.forward_features(x, cells, backend=backend)
            objective = sum(m.float().pow(2).mean() for m in maps)
        objective.backward()
        model.zero_grad(set_to_none=True)

    return step


def pretrain_case(model, x: torch.Tensor, backend: str, ratio: float, dtype: torch.dtype):
    cells_ratio = ratio
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.04)
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=dtype == torch.float16)

    def step() -> None:
        model.mask_ratio = cells_ratio
        model.encoder.backend = backend
        cells = model.generate_mask(x.shape[0], x.device, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, dtype=dtype):
            loss = model(x, cells).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()

    return step


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    reason = unavailable()
    if reason is not None:
        print(f"hyspark_gpu: skipped, {reason}. This check needs one CUDA GPU with spconv; nothing written.")
        return 0
    from hyspark.models import create_hyspark

    torch.manual_seed(0)
    model = create_hyspark("paper", backend="dense", spconv_algorithm="auto").to(DEVICE)
    batch = 2 if args.quick else 4
    ratios = (0.75,) if args.quick else RATIOS
    equivalence = check_equivalence(model, 2)
    worst = max(r["rel_to_max"] for r in equivalence)
    passed = worst <= 1e-4
    verdict = "ok" if passed else "FAIL"
    print(f"spconv vs dense on CUDA, fp32: worst difference {worst:.2e} of each tensor's max ({verdict})")

    size = model.encoder.img_size
    x = torch.rand(batch, 1, size, size, size, device=DEVICE)
    rows, step_rows, claims = [], [], []
    for dtype_name, dtype in DTYPES.items():
        for kind, factory, table in (("encoder", encoder_case, rows), ("step", pretrain_case, step_rows)):
            cases = {f"{b}@{r}": factory(model, x, b, r, dtype) for r in ratios for b in ("dense", "spconv")}
            times = compare(cases, args.repeats)
            for name, fn in cases.items():
                backend, ratio = name.split("@")
                table.append(
                    {"dtype": dtype_name, "backend": backend, "mask": float(ratio),
                     "s": times[name]["median_s"], "peak_mib": peak_memory_mib(fn, DEVICE.type)}
                )  # fmt: skip
            for ratio in ratios:
                at = {r["backend"]: r for r in table if r["dtype"] == dtype_name and r["mask"] == ratio}
                label = f"spconv vs dense {kind} {{}} (96^3, batch {batch}, mask {ratio}, {dtype_name})"
                dense, sparse = at["dense"], at["spconv"]
                claims.append(claim(label.format("time"), "dense", "spconv", dense["s"], sparse["s"], "s"))
                claims.append(
                    claim(
                        label.format("memory"),
                        "dense",
                        "spconv",
                        dense["peak_mib"],
                        sparse["peak_mib"],
                        "MiB",
                    )
                )
    print(f"HySparK on {torch.cuda.get_device_name(DEVICE)}, batch {batch}, median of {args.repeats}")
    print_table(rows)
    print()
    print_table(step_rows)
    goal = [c for c in claims if "encoder time" in c["claim"] and "mask 0.75" in c["claim"]]
    for item in goal:
        print(f"goal (>= 2.5x): {item['claim']}: {item['ratio']:.2f}x")
    payload = {
        "equivalence_fp32": {"passed": passed, "worst_rel_to_max": worst, "tensors": equivalence},
        "encoder": rows,
        "pretrain_step": step_rows,
        "claims": claims,
    }
    path = write_results("hyspark_gpu", payload, args.quick)
    print(f"wrote {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

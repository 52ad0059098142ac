"""HySparK benchmark: the sparse (spconv) against the masked-dense encoder, and the full pre-training step.

Measured side by side in one run with ``benchmarks/_harness.py``:

- encoder forward + backward (batch 1) at mask ratios 0 / .5 / .75 / .9 for the ``dense`` backend (masked
  dense compute), the ``spconv`` backend (Native rulebooks on CPU; implicit GEMM on CUDA) when spconv is
  installed, and a ``plain`` dense encoder with no mask at all; interleaved rounds, median; peak memory is
  the harness's one measure (peak RSS growth of a forked child on CPU, peak allocated on CUDA);
- at full size, one whole pre-training step (forward, backward, clip, AdamW) at 96^3, mask .75, per backend.

The paper's efficiency claim is the sparse encoder's saving over dense compute at mask .75: reported as
dense / spconv time and memory. No figure from elsewhere is compared against.

``--quick``: the ``tiny`` size (32^3) only. Writes ``benchmarks/results/hyspark[.quick].json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that `import hyspark`
# finds the installed package and `import _harness` still finds the harness beside this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

RATIOS = (0.0, 0.5, 0.75, 0.9)


def encoder_step(model, x: torch.Tensor, variant: str, ratio: float):
    model.mask_ratio = ratio
    cells = model.generate_mask(1, x.device, generator=torch.Generator().manual_seed(0))
    active = None if variant == "plain" else cells  # plain: no mask, every voxel computed
    backend = "dense" if variant == "plain" else variant

    def step() -> None:
        maps = model.encoder.forward_features(x, active, backend=backend)
        sum(m.float().pow(2).mean() for m in maps).backward()
        model.zero_grad(set_to_none=True)

    return step


def pretrain_step(model, x: torch.Tensor, backend: str):
    model.mask_ratio = 0.75
    cells = model.generate_mask(1, x.device, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.04)

    def step() -> None:
        model.encoder.backend = backend
        optimizer.zero_grad(set_to_none=True)
        model(x, cells).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    from hyspark.models import create_hyspark, spconv_available

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backends = ["dense"] + (["spconv"] if spconv_available() else [])
    rows, steps, claims = [], [], []
    for size in ["tiny"] if args.quick else ["tiny", "paper"]:
        torch.manual_seed(0)
        model = create_hyspark(size).to(device)
        s = model.encoder.img_size
        x = torch.rand(1, 1, s, s, s, device=device)
        cases = {("plain", 0.0): encoder_step(model, x, "plain", 0.0)}
        cases.update({(b, r): encoder_step(model, x, b, r) for b in backends for r in RATIOS})
        # The paper-size cases take seconds each on a CPU: the harness's minimum of 3 rounds, 1 warm-up.
        times = compare({f"{v}@{r}": fn for (v, r), fn in cases.items()}, args.repeats)
        plain = times["plain@0.0"]["median_s"]
        for (variant, ratio), fn in cases.items():
            seconds = times[f"{variant}@{ratio}"]["median_s"]
            memory = peak_memory_mib(fn, device.type)
            rows.append(
                {"size": f"{s}^3", "variant": variant, "mask": ratio, "s": seconds,
                 "plain_over_this": plain / seconds, "peak_mib": memory}
            )  # fmt: skip
        if "spconv" in backends:
            at = {(r["variant"], r["mask"]): r for r in rows if r["size"] == f"{s}^3"}
            dense, sparse = at[("dense", 0.75)], at[("spconv", 0.75)]
            name = f"sparse vs masked-dense encoder {{}} ({s}^3, mask .75)"
            claims.append(claim(name.format("time"), "dense", "spconv", dense["s"], sparse["s"], "s"))
            claims.append(
                claim(name.format("memory"), "dense", "spconv", dense["peak_mib"], sparse["peak_mib"], "MiB")
            )
        if size == "paper":
            step_times = compare({b: pretrain_step(model, x, b) for b in backends}, args.repeats)
            steps += [{"backend": b, "s": step_times[b]["median_s"]} for b in backends]
    print(f"HySparK encoder fwd+bwd, batch 1, {device}, {args.threads} threads, median of {args.repeats}")
    print_table(rows)
    if steps:
        print("\nfull pre-training step at 96^3, mask .75")
        print_table(steps)
    path = write_results("hyspark", {"encoder": rows, "pretrain_step": steps, "claims": claims}, args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

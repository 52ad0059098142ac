"""HySparK benchmark: the sparse (spconv) against the masked-dense encoder, and the full pre-training step.

Measured side by side in one run with ``benchmarks/_harness.py``:

- encoder forward + backward (batch 1) at mask ratios 0 / .5 / .75 / .9 for the ``dense`` backend (masked
  dense compute), the ``spconv`` backend (Native rulebooks on CPU; implicit GEMM on CUDA) when spconv is
  installed, and a ``plain`` dense encoder with no mask at all; interleaved rounds, median; peak memory is
  the harness's one measure (peak RSS growth of a forked child on CPU, peak allocated on CUDA);
- one whole pre-training step (forward, backward, clip, AdamW) at mask .75, batch 1, as ratios against the
  current ``dense`` step (fp32): the ``spconv`` backend, the ``dense`` backend under bf16 autocast (what
  ``--trainer.precision bf16-mixed`` runs), the dense decoder in ``channels_last_3d``, and a ``plain`` step
  whose encoder computes every voxel (no mask at all); with peak memory per case;
- the FLOP floor of that step: its FLOPs counted with ``torch.utils.flop_counter`` (forward + backward,
  dense compute; the encoder's share separately) over this machine's fp32 matmul rate measured in the same
  run (2048^3 ``torch.mm``). The floor of a sparse encoder keeps only the active fraction of the encoder's
  CNN FLOPs.

The paper's efficiency claim is the sparse encoder's saving over dense compute at mask .75: reported as
dense / spconv time and memory. No figure from elsewhere is compared against.

``--quick``: the ``tiny`` size (32^3) only. Writes ``benchmarks/results/hyspark[.quick].json``.
``--conv-only``: only the decoder's finest convolution at 96^3 (ConvBNReLU 96 -> 48 channels, forward +
backward) in fp32, bf16 autocast and channels_last_3d: the decoder's dominant cost, in about a minute;
writes ``benchmarks/results/hyspark_conv.json``.
``--paper-memory-only``: only peak memory (no timing) at 96^3, mask .75: the encoder forward + backward and
the whole step, dense against spconv; writes ``benchmarks/results/hyspark_paper_memory.json``.
``--paper-step-only [--step-size=N]``: only the ``paper`` network's step and its FLOP floor, at N^3 crops
(default 96), for a machine where the whole run takes too long: the 0.2.0 dense step (the baseline), the 0.3.0
default (decoder in channels_last_3d), and the 0.4.0 default (decoder's transposed convolutions and head as
matrix products, the encoder blocks' per-voxel layers as matrix products) with the dense and the spconv
encoder, fp32, and the 0.4.0 dense step under bf16 autocast; writes
``benchmarks/results/hyspark_paper_step[_N].json``.

The earlier steps are rebuilt in this run from the current code, with the same weights:
``matmul_decoder=False`` (and ``channels_last_decoder=False`` for 0.2.0) gives their decoder, and
:func:`plain_block_forward` (the MedNeXt block's forward up to 0.3.0: norm and 1x1 convolutions as ``nn``
modules) their encoder blocks. One difference remains: the stem's output is converted to channels_last_3d in
the encoder, a copy that the 0.3.0 code made in its first block instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that `import hyspark`
# finds the installed package and `import _harness` still finds the harness beside this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import copy  # noqa: E402
import re  # noqa: E402
import types  # noqa: E402

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

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


def pretrain_step(model, x: torch.Tensor, backend: str, autocast: bool = False, plain: bool = False):
    """One AdamW step at mask .75 with a fixed mask; ``plain``: the encoder computes every voxel."""
    model.mask_ratio = 0.75
    cells = model.generate_mask(x.shape[0], x.device, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.04)

    def loss() -> torch.Tensor:
        if not plain:
            return model(x, cells).loss
        from hyspark.models import masked_patch_mse
        from hyspark.models.encoder import upsample_cells

        visible = upsample_cells(cells, model.patch).to(x.dtype)
        maps = model.encoder.forward_features(x * visible, None, backend="dense")
        return masked_patch_mse(model.decoder(model.densify(maps, cells)), x, cells, model.patch)

    def step() -> None:
        model.encoder.backend = backend
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            value = loss()
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step


def plain_block_forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``MedNeXtBlock.forward`` up to hyspark 0.3.0 (the baseline's encoder blocks): the channels-first norm
    and the 1x1 convolutions as ``nn`` modules (a 1x1 ``nn.Conv3d`` runs slow_conv3d on CPU)."""
    y = self.depthwise(x.contiguous(memory_format=torch.channels_last_3d))
    y = self.compress(self.act(self.expand(self.norm(y))))
    y = x + y
    return y if mask is None else y * mask


def earlier_step_model(model, version: str):
    """A copy of a 0.4.0 ``model`` (same weights) that computes as hyspark ``version`` ("0.2.0" | "0.3.0")."""
    from hyspark.models.encoder import MedNeXtBlock

    other = copy.deepcopy(model)
    for module in other.modules():
        if isinstance(module, MedNeXtBlock):
            module.forward = types.MethodType(plain_block_forward, module)
        if hasattr(module, "matmul"):
            module.matmul = False
    if version == "0.2.0":
        other.decoder.to(memory_format=torch.contiguous_format)
        other.densify_projs.to(memory_format=torch.contiguous_format)
    return other


def step_flops(model, x: torch.Tensor) -> dict[str, float]:
    """FLOPs of one dense forward + backward at mask .75: in all, and in the encoder's CNN."""
    model.mask_ratio = 0.75
    cells = model.generate_mask(x.shape[0], x.device, generator=torch.Generator().manual_seed(0))
    model.encoder.backend = "dense"
    with FlopCounterMode(display=False) as counter:
        model(x, cells).loss.backward()
    model.zero_grad(set_to_none=True)
    counts = {name: float(sum(by_op.values())) for name, by_op in counter.get_flop_counts().items()}
    total = counts["Global"]
    # forward_features is not a module call, so the encoder's CNN is what the other parts leave.
    decoder = counts.get("HySparK.decoder", 0.0)
    decoder += sum(v for k, v in counts.items() if re.fullmatch(r"HySparK\.densify_projs\.\d+", k))
    vit = counts.get("HySparK.encoder.vit", 0.0)
    return {"total": total, "encoder_cnn": total - decoder - vit, "vit": vit, "decoder_and_densify": decoder}


def matmul_gflops(repeats: int) -> float:
    """This machine's fp32 matmul rate (GFLOP/s) at the benchmark's thread count, 2048^3 torch.mm."""
    n = 2048
    a, b = torch.rand(n, n), torch.rand(n, n)
    seconds = compare({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]["median_s"]
    return 2 * n**3 / seconds / 1e9


def encoder_table(model, x, backends, repeats, device, rows, claims) -> None:
    """Encoder forward + backward per backend and mask ratio, and the plain encoder; appends rows, claims."""
    s = model.encoder.img_size
    cases = {("plain", 0.0): encoder_step(model, x, "plain", 0.0)}
    cases.update({(b, r): encoder_step(model, x, b, r) for b in backends for r in RATIOS})
    times = compare({f"{v}@{r}": fn for (v, r), fn in cases.items()}, repeats)
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


def decoder_conv_table(repeats: int, size: int = 96, cin: int = 96, cout: int = 48) -> list[dict]:
    """The decoder's finest ConvBNReLU (conv3x3 cin -> cout at size^3) forward + backward: fp32, bf16
    autocast, and channels_last_3d, as ratios against fp32."""
    torch.manual_seed(0)
    from hyspark.models.hyspark import ConvBNReLU

    block = ConvBNReLU(cin, cout)
    block_cl = copy.deepcopy(block).to(memory_format=torch.channels_last_3d)
    x = torch.rand(1, cin, size, size, size, requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_(True)

    def case(module, inp, bf16: bool):
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = module(inp)
            out.float().pow(2).mean().backward()
            module.zero_grad(set_to_none=True)
            inp.grad = None

        return run

    cases = {
        "fp32": case(block, x, False),
        "bf16": case(block, x, True),
        "fp32-channels_last_3d": case(block_cl, x_cl, False),
        "bf16-channels_last_3d": case(block_cl, x_cl, True),
    }
    times = compare(cases, repeats)
    base = times["fp32"]["median_s"]
    return [
        {"size": f"{size}^3", "conv": f"{cin}->{cout}", "case": name, "s": t["median_s"],
         "this_over_fp32": t["median_s"] / base}
        for name, t in times.items()
    ]  # fmt: skip


def paper_memory() -> None:
    """Peak memory of one call at 96^3, mask .75, batch 1: encoder fwd + bwd and the step, dense vs spconv."""
    from hyspark.models import create_hyspark

    torch.manual_seed(0)
    model = create_hyspark("paper", channels_last_decoder=False)
    x = torch.rand(1, 1, 96, 96, 96)
    rows, claims = [], []
    for kind in ("encoder", "step"):
        at = {}
        for backend in ("dense", "spconv"):
            fn = (
                encoder_step(model, x, backend, 0.75)
                if kind == "encoder"
                else pretrain_step(model, x, backend)
            )
            at[backend] = peak_memory_mib(fn, "cpu")
            rows.append({"kind": kind, "backend": backend, "mask": 0.75, "peak_mib": at[backend]})
        label = f"spconv vs dense {kind} peak memory (96^3, mask .75, batch 1)"
        claims.append(claim(label, "dense", "spconv", at["dense"], at["spconv"], "MiB"))
    print_table(rows)
    print(f"wrote {write_results('hyspark_paper_memory', {'memory': rows, 'claims': claims}, False)}")


def main() -> None:
    flags = {"--paper-step-only", "--conv-only", "--paper-memory-only"}
    step_size = 96
    for arg in [a for a in sys.argv[1:] if a.startswith("--step-size=")]:
        step_size = int(arg.split("=", 1)[1])
        sys.argv.remove(arg)
    step_only = "--paper-step-only" in sys.argv[1:]
    if "--paper-memory-only" in sys.argv[1:]:
        args = parse_args(__doc__.splitlines()[0], [a for a in sys.argv[1:] if a not in flags])
        paper_memory()
        return
    if "--conv-only" in sys.argv[1:]:
        args = parse_args(__doc__.splitlines()[0], [a for a in sys.argv[1:] if a not in flags])
        rows = decoder_conv_table(args.repeats)
        print(f"decoder's finest ConvBNReLU, fwd + bwd, {args.threads} threads, median of {args.repeats}")
        print_table(rows)
        claims = [
            claim(f"decoder conv 96->48 at 96^3, {r['case']} vs fp32", "fp32", r["case"],
                  rows[0]["s"], r["s"], "s")
            for r in rows[1:]
        ]  # fmt: skip
        print(f"wrote {write_results('hyspark_conv', {'decoder_conv': rows, 'claims': claims}, False)}")
        return
    args = parse_args(__doc__.splitlines()[0], [a for a in sys.argv[1:] if a not in flags])
    from hyspark.models import create_hyspark, spconv_available

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backends = ["dense"] + (["spconv"] if spconv_available() else [])
    rows, steps, claims, floors = [], [], [], []
    gflops = matmul_gflops(args.repeats)
    sizes = ["paper"] if step_only else ["tiny"] if args.quick else ["tiny", "paper"]
    for size in sizes:
        torch.manual_seed(0)
        overrides = {"img_size": step_size} if step_only else {}
        model = create_hyspark(size, **overrides).to(device)  # the 0.4.0 default
        # The 0.2.0 step (same weights; decoder in the default memory format, nn modules) is the baseline.
        base = earlier_step_model(model, "0.2.0")
        s = model.encoder.img_size
        x = torch.rand(1, 1, s, s, s, device=device)
        if not step_only:
            encoder_table(model, x, backends, args.repeats, device, rows, claims)
        step_cases = {
            "dense": pretrain_step(base, x, "dense"),
            "dense-0.3.0": pretrain_step(earlier_step_model(model, "0.3.0"), x, "dense"),
            "dense-0.4.0": pretrain_step(model, x, "dense"),
        }
        if "spconv" in backends:
            step_cases["spconv-0.4.0"] = pretrain_step(model, x, "spconv")
        step_cases["dense-bf16-0.4.0"] = pretrain_step(model, x, "dense", autocast=True)
        if not step_only:
            step_cases["plain-0.4.0"] = pretrain_step(model, x, "dense", plain=True)
        step_times = compare(step_cases, args.repeats)
        baseline = step_times["dense"]["median_s"]
        for name, fn in step_cases.items():
            seconds = step_times[name]["median_s"]
            steps.append(
                {"size": f"{s}^3", "case": name, "s": seconds, "this_over_dense": seconds / baseline,
                 "times_s": step_times[name]["times_s"], "peak_mib": peak_memory_mib(fn, device.type)}
            )  # fmt: skip
        at = {r["case"]: r for r in steps if r["size"] == f"{s}^3"}
        for name in ("dense-0.3.0", "dense-0.4.0", "spconv-0.4.0", "dense-bf16-0.4.0"):
            if name in at:
                label = f"pre-training step, {name} vs the 0.2.0 dense fp32 step ({s}^3, mask .75, batch 1)"
                claims.append(claim(label + " time", "dense", name, at["dense"]["s"], at[name]["s"], "s"))
        if "spconv-0.4.0" in at:
            label = f"pre-training step, spconv-0.4.0 vs the 0.2.0 dense fp32 step ({s}^3, mask .75) memory"
            claims.append(
                claim(label, "dense", "spconv-0.4.0", at["dense"]["peak_mib"], at["spconv-0.4.0"]["peak_mib"],
                      "MiB")
            )  # fmt: skip
        flops = step_flops(base, x)
        sparse_floor_flops = flops["total"] - 0.75 * flops["encoder_cnn"]
        tera = {k: v / 1e12 for k, v in flops.items()}
        floor_dense, floor_sparse = flops["total"] / 1e9 / gflops, sparse_floor_flops / 1e9 / gflops
        best_fp32 = min((k for k in at if "bf16" not in k and "plain" not in k), key=lambda k: at[k]["s"])
        floors.append(
            {"size": f"{s}^3", "step_tflop": tera["total"], "encoder_cnn_tflop": tera["encoder_cnn"],
             "vit_tflop": tera["vit"], "decoder_tflop": tera["decoder_and_densify"],
             "floor_dense_s": floor_dense, "floor_sparse_encoder_s": floor_sparse,
             "dense_step_over_floor": baseline / floor_dense,
             "best_fp32_step": best_fp32, "best_fp32_step_over_dense": at[best_fp32]["this_over_dense"],
             "best_fp32_step_over_sparse_floor": at[best_fp32]["s"] / floor_sparse}
        )  # fmt: skip
    if rows:
        print(f"HySparK encoder fwd+bwd, batch 1, {device}, {args.threads} threads, median of {args.repeats}")
        print_table(rows)
    print("\nfull pre-training step, mask .75, batch 1 (this_over_dense: time / the dense fp32 step's)")
    print_table(steps)
    print(f"\nFLOP floor at this machine's measured fp32 matmul rate, {gflops:.0f} GFLOP/s")
    print_table(floors)
    payload = {"encoder": rows, "pretrain_step": steps, "flop_floor": floors, "matmul_gflops": gflops}
    name = "hyspark" if not step_only else f"hyspark_paper_step{'' if step_size == 96 else f'_{step_size}'}"
    path = write_results(name, {**payload, "claims": claims}, args.quick and not step_only)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

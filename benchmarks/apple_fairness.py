"""APPLE benchmark: inference overhead of the perturbed segmentor against the bare (deployed) segmentor.

APPLE's claim is post-hoc and light: the deployed segmentor is untouched and only a small perturber ``G_p``
runs between its encoder and decoder at inference (the discriminator is needed for training only). Measured
side by side in one run with ``benchmarks/_harness.py`` (warm-up, interleaved rounds, median; peak memory
is the harness's one measure), for every segmentor family:

- ``bare``: ``segmentor(x)``;
- ``apple``: ``decode(encode(x) + G_p(z))`` (bottleneck perturbed, the default);
- ``apple_skips``: every U-Net latent perturbed (``perturb_skips``; the same as ``apple`` for SAM-like nets).

Claims: bare / apple time and memory per family (a ratio just under 1 = a small overhead), and the extra
parameters of ``G_p`` relative to the segmentor. A timed call is 20 forwards for the tiny
variants. ``--quick``: the ``tiny*`` variants at 64x64;
otherwise also the ``paper*`` U-Net-like variants at 224x224, and on CUDA the SAM-like ones at 1024x1024
(ViT-B at 1024^2 takes tens of seconds per forward on a CPU, so they are left out there and said so).
Writes ``benchmarks/results/apple_fairness[.quick].json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Named like the package: its folder goes to the END of sys.path, so `import apple_fairness` finds the
# installed package and `import _harness` still finds the harness beside this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

FAMILIES = ("", "_attention_unet", "_cmunext", "_samed", "_medsam")


def _size(variant: str) -> int:
    if "sam" in variant:
        return 64 if variant.startswith("tiny") else 1024
    return 64 if variant.startswith("tiny") else 224


def _cases(variant: str, device: torch.device, batch: int) -> tuple[dict, dict]:
    from apple_fairness import create_model

    torch.manual_seed(0)
    model = create_model(variant).to(device).eval()
    skips = create_model(variant, perturb_skips=True).to(device).eval()
    skips.segmentor.load_state_dict(model.segmentor.state_dict())
    s = _size(variant)
    x = torch.rand(batch, 1, s, s, device=device)

    # Tiny forwards take milliseconds: time 20 of them per call so scheduler noise averages out.
    inner = 20 if variant.startswith("tiny") else 1

    def run(fn):
        def step() -> None:
            with torch.inference_mode():
                for _ in range(inner):
                    fn(x)

        return step

    cases = {"bare": run(model.segmentor), "apple": run(model)}
    if "sam" not in variant:
        cases["apple_skips"] = run(skips)
    params = {
        "segmentor": sum(p.numel() for p in model.segmentor.parameters()),
        "perturber": sum(p.numel() for p in model.perturbers.parameters()),
        "perturber_skips": sum(p.numel() for p in skips.perturbers.parameters()),
    }
    return cases, params


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prefixes = ["tiny"] if args.quick else ["tiny", "paper"]
    rows, claims = [], []
    for prefix in prefixes:
        for family in FAMILIES:
            variant = prefix + family
            if prefix == "paper" and "sam" in family and device.type != "cuda":
                print(f"skipped {variant}: SAM ViT-B at 1024^2 is measured on CUDA only")
                continue
            batch = 4 if prefix == "tiny" else 1
            cases, params = _cases(variant, device, batch)
            times = compare(cases, max(args.repeats, 5))
            memory = {name: peak_memory_mib(fn, device.type) for name, fn in cases.items()}
            bare = times["bare"]["median_s"]
            for name in cases:
                rows.append(
                    {"variant": variant, "input": f"{batch}x1x{_size(variant)}^2", "case": name,
                     "s": times[name]["median_s"], "bare_over_this": bare / times[name]["median_s"],
                     "peak_mib": memory[name]}
                )  # fmt: skip
            label = f"{variant} inference, bare segmentor vs APPLE (bottleneck)"
            claims.append(claim(f"{label} time", "bare", "apple", bare, times["apple"]["median_s"], "s"))
            claims.append(claim(f"{label} memory", "bare", "apple", memory["bare"], memory["apple"], "MiB"))
            claims.append(
                claim(f"{variant} parameters, segmentor vs G_p", "segmentor", "perturber",
                      params["segmentor"], params["perturber"], "parameters")
            )  # fmt: skip
    print(f"APPLE inference overhead, {device}, {args.threads} threads, median of {args.repeats}")
    print_table(rows)
    print()
    print_table(claims, ["claim", "baseline_value", "candidate_value", "ratio", "unit"])
    path = write_results("apple_fairness", {"inference": rows, "claims": claims}, args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

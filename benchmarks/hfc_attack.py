"""hfc-attack: attack iterations per second with and without the HFC term, and GMM fit time.

Measured side by side in one run with ``benchmarks/_harness.py`` (random classifier weights and random
features: speed does not depend on them). Sizes: the tiny demo ResNet at 64 px (``--quick``) and, without
``--quick``, also the paper's ResNet-50 at 224 px. The HFC term uses one mixture per class on every ReLU layer
with at most 512 channels (K components, as fitted by ``fit-gmm``). Claim (a ratio in this run):

- one BIM iteration with HFC against one without: time (the cost of the feature constraint).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that `import hfc_attack`
# finds the installed package and `import _harness` still finds the harness beside this file.
_here = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if p not in ("", _here)] + [_here]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402


def random_mixtures(model: torch.nn.Module, size: int, components: int):
    """An HFC loss with random (valid) mixtures on every hooked layer of ``model``."""
    from hfc_attack import FeatureExtractor, GaussianMixture, HFCLoss

    with torch.no_grad():
        _, feats = FeatureExtractor(model)(torch.rand(1, 3, size, size))
    g = torch.Generator().manual_seed(0)
    mixtures = {}
    for layer, f in feats.items():
        d = f.shape[1]
        mixtures[layer] = {
            c: GaussianMixture(
                torch.full((components,), 1 / components),
                torch.rand(components, d, generator=g),
                torch.eye(d).expand(components, d, d).clone(),
            )
            for c in (0, 1)
        }
    return HFCLoss(mixtures)


def attack_case(variant: str, size: int, batch: int, hfc: bool, components: int):
    from hfc_attack import build_attack, create_model

    torch.manual_seed(0)
    model = create_model(variant).eval()
    images, labels = torch.rand(batch, 3, size, size), torch.zeros(batch, dtype=torch.long)
    settings = {"hfc": random_mixtures(model, size, components), "targeted": True} if hfc else {}
    attack = build_attack("bim", model, 1 / 256, steps=1, **settings)
    return lambda: attack(images, labels, torch.ones(batch, dtype=torch.long))


def gmm_case(n: int, dim: int, components: int):
    from hfc_attack import fit_class_gmms

    rng = np.random.default_rng(0)
    feats = {"layer": rng.normal(size=(n, dim))}
    labels = np.arange(n) % 2
    return lambda: fit_class_gmms(feats, labels, components, n_init=1, max_iter=100)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    sizes = [("tiny", 64, 16, 4)] + ([] if args.quick else [("paper", 224, 4, 16)])
    rows, claims = [], []
    for variant, size, batch, components in sizes:
        cases = {
            f"bim {variant}": attack_case(variant, size, batch, False, components),
            f"bim+hfc {variant}": attack_case(variant, size, batch, True, components),
        }
        timed = compare(cases, repeats=args.repeats)
        for name, fn in cases.items():
            rows.append({
                "case": name, "size": size, "batch": batch, "median_s": timed[name]["median_s"],
                "iters_per_s": 1 / timed[name]["median_s"], "peak_mib": peak_memory_mib(fn),
            })  # fmt: skip
        claims.append(
            claim(
                f"HFC overhead per BIM iteration ({variant}, {size} px, batch {batch}, K={components})",
                "bim+hfc",
                "bim",
                timed[f"bim+hfc {variant}"]["median_s"],
                timed[f"bim {variant}"]["median_s"],
                "s",
            )
        )
    gmm_sizes = [(200, 64, 4)] if args.quick else [(200, 64, 4), (1000, 256, 16)]
    gmm_cases = {f"gmm fit n={n} d={d} K={k}": gmm_case(n, d, k) for n, d, k in gmm_sizes}
    timed = compare(gmm_cases, repeats=args.repeats)
    for name in gmm_cases:
        rows.append({"case": name, "median_s": timed[name]["median_s"]})
    print_table(rows, ["case", "size", "batch", "median_s", "iters_per_s", "peak_mib"])
    for c in claims:
        print(f"{c['claim']}: {c['ratio']:.2f}x the time of plain BIM")
    path = write_results("hfc_attack", {"rows": rows, "claims": claims}, args.quick)
    print(f"-> {path}")


if __name__ == "__main__":
    main()

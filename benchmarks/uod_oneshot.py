"""uod-oneshot: stage-1 SSL step, pseudo-label throughput, DATR train step and inference latency.

Measured side by side in one run with ``benchmarks/_harness.py`` (random weights; speed does not depend on
them). Sizes: the paper's 384 px (stage 1) and 576 px (stage 2), or, with ``--quick``, the tiny networks at
96 and 128 px. Claims (ratios in this run):

- the universal DATR (one network, D = 3 domains) against three single-domain DATRs: parameters;
- DATR inference at 576 px against 384 px: time (the price of the paper's larger stage-2 input).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that `import uod_oneshot`
# finds the installed package and `import _harness` still finds the harness beside this file.
_here = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if p not in ("", _here)] + [_here]

import torch  # noqa: E402
from _harness import claim, compare, parse_args, print_table, write_results  # noqa: E402


def ssl_step(variant: str, size: int, crop: int, batch: int):
    from uod_oneshot.losses import multiscale_infonce_loss
    from uod_oneshot.models import create_ssl_model

    torch.manual_seed(0)
    net, crop_net = create_ssl_model(variant), create_ssl_model(variant)
    optimizer = torch.optim.Adam([*net.parameters(), *crop_net.parameters()], lr=1e-5)
    image, view = torch.randn(batch, 3, size, size), torch.randn(batch, 3, crop, crop)
    full_pts = torch.full((batch, 8, 2), size / 2.0)
    crop_pts = torch.full((batch, 8, 2), crop / 2.0)

    def step() -> None:
        loss, _ = multiscale_infonce_loss(net(image, 0)[:5], crop_net(view, 0)[:5], full_pts, crop_pts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def pseudo_label_batch(variant: str, size: int, batch: int, landmarks: int = 19):
    from uod_oneshot.matching import match_landmarks, template_features
    from uod_oneshot.models import create_ssl_model

    torch.manual_seed(0)
    net = create_ssl_model(variant).eval()
    strides = (32, 16, 8, 4, 2)
    with torch.no_grad():
        queries = template_features(
            net(torch.randn(1, 3, size, size), 0)[:5], torch.rand(landmarks, 2) * size, strides
        )
    images = torch.randn(batch, 3, size, size)

    def run() -> None:
        with torch.no_grad():
            match_landmarks(net(images, 0)[:5], queries, strides)

    return run


def datr_case(variant: str, size: int, batch: int, train: bool, num_domains: int = 3):
    from uod_oneshot.decoding import decode_largest_component
    from uod_oneshot.models import MODEL_CONFIGS, create_model

    torch.manual_seed(0)
    counts = tuple(MODEL_CONFIGS[variant]["num_landmarks"][:1]) * num_domains
    model = create_model(variant, num_landmarks=counts)
    image = torch.randn(batch, 1, size, size)
    if not train:
        model.eval()

        def infer() -> None:
            with torch.no_grad():
                decode_largest_component(model(image, 0))

        return infer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = model(image, 0).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def parameters(variant: str, num_domains: int) -> int:
    from uod_oneshot.models import MODEL_CONFIGS, create_model

    counts = tuple(MODEL_CONFIGS[variant]["num_landmarks"][:1]) * num_domains
    return sum(p.numel() for p in create_model(variant, num_landmarks=counts).parameters())


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    variant = "tiny" if args.quick else "paper"
    small, large = (96, 128) if args.quick else (384, 576)
    crop = small * 2 // 3
    cases = {
        f"ssl_step_{small}": ssl_step(variant, small, crop - crop % 32, 2),
        f"pseudo_label_{small}": pseudo_label_batch(variant, small, 2),
        f"datr_step_{small}": datr_case(variant, small, 1, True),
        f"datr_step_{large}": datr_case(variant, large, 1, True),
        f"datr_infer_{small}": datr_case(variant, small, 1, False),
        f"datr_infer_{large}": datr_case(variant, large, 1, False),
    }
    batches = {f"ssl_step_{small}": 2, f"pseudo_label_{small}": 2}
    times = compare(cases, args.repeats)
    rows = []
    for name in cases:
        seconds = times[name]["median_s"]
        batch = batches.get(name, 1)
        rows.append({"case": name, "variant": variant, "batch": batch, "s": seconds,
                     "images_per_s": batch / seconds,
                     # not measured: the harness's forked child hangs here once the parent has run a
                     # backward pass (autograd threads do not survive fork)
                     "peak_mib": "n/a"})  # fmt: skip
    print(f"uod-oneshot ({variant}), median of {max(3, args.repeats)} interleaved rounds")
    print_table(rows)
    universal, single = parameters(variant, 3), parameters(variant, 1)
    infer_large, infer_small = (
        times[f"datr_infer_{large}"]["median_s"],
        times[f"datr_infer_{small}"]["median_s"],
    )
    claims = [
        claim(
            "universal DATR (3 domains) vs three single-domain DATRs, parameters",
            "3 single-domain DATRs",
            "universal DATR",
            3 * single / 1e6,
            universal / 1e6,
            "M parameters",
        ),
        claim(
            f"DATR inference at {large} px vs {small} px",
            f"{large} px",
            f"{small} px",
            infer_large,
            infer_small,
            "s",
        ),
    ]
    for c in claims:
        values = f"{c['baseline_value']:.4g} / {c['candidate_value']:.4g} {c['unit']}"
        print(f"{c['claim']}: {values} = {c['ratio']:.2f}")
    path = write_results("uod_oneshot", {"variant": variant, "cases": rows, "claims": claims}, args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

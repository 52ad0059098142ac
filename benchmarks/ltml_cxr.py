"""LTML-CXR benchmark: training throughput, and the cost of the ANR + LLM loss against plain BCE.

Measured side by side in one run with ``benchmarks/_harness.py`` (random weights and labels; speed does not
depend on them):

1. Loss alone (timed in blocks of 50 calls; time per call), forward + backward on (B, C) logits with
   long-tailed labels, for all six losses (CE, Focal, DB, ANR, ANR-LLA, ANR-LLM) at epoch 2 (so LLA / LLM
   do reconsider): C = 39 (LTML-MIMIC-CXR) and B = 32 and 256. The claim is the ratio ANR-LLM / CE time
   (the loss overhead; LLM evaluates the loss twice and sorts the negatives).
2. One training step (forward, loss, backward, SGD step) of the whole classifier: ``tiny`` at the demo's
   64 x 64 (batch 16) and, without ``--quick``, ``paper`` (ResNet-50) at 224 x 224 (batch 8), with CE and
   with ANR-LLM: images/s, the step-level ratio and the harness's peak memory of one step.

Writes ``benchmarks/results/ltml_cxr[.quick].json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that `import ltml_cxr`
# finds the installed package and `import _harness` still finds the harness beside this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

from ltml_cxr.models import LOSS_NAMES, build_loss, create_model  # noqa: E402

NUM_CLASSES = 39
INNER = 50  # loss calls per timed loss case


def labels_and_counts(batch: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    prevalence = 0.2 / torch.arange(1, classes + 1).float()  # long-tailed
    targets = (torch.rand(batch, classes, generator=generator) < prevalence).float()
    counts = (prevalence * 100_000).round().clamp(min=5)
    return targets, counts


def loss_step(name: str, batch: int, classes: int = NUM_CLASSES):
    targets, counts = labels_and_counts(batch, classes)
    loss = build_loss(name, classes)
    loss.set_class_counts(counts, 100_000)
    logits = torch.randn(batch, classes, generator=torch.Generator().manual_seed(1), requires_grad=True)

    def step() -> None:
        for _ in range(INNER):  # sub-millisecond calls: time a block of them
            loss(logits, targets, epoch=2).backward()
            logits.grad = None

    return step


def train_step(variant: str, loss_name: str, size: int, batch: int):
    torch.manual_seed(0)
    model = create_model(variant, num_classes=NUM_CLASSES)
    targets, counts = labels_and_counts(batch, NUM_CLASSES)
    loss = build_loss(loss_name, NUM_CLASSES)
    loss.set_class_counts(counts, 100_000)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    images = torch.randn(batch, 3, size, size)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(model(images), targets, epoch=2).backward()
        optimizer.step()

    return step


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    results: dict = {"losses": [], "training": []}
    claims = []
    for batch in (32, 256):
        timings = compare({name: loss_step(name, batch) for name in LOSS_NAMES}, repeats=max(args.repeats, 5))
        base = timings["ce"]["median_s"]
        for name in LOSS_NAMES:
            median = timings[name]["median_s"]
            results["losses"].append(
                {
                    "batch": batch,
                    "classes": NUM_CLASSES,
                    "loss": name,
                    "ms": median * 1e3 / INNER,
                    "vs_ce": median / base,
                }
            )
        claims.append(
            claim(
                f"loss fwd+bwd B={batch} C={NUM_CLASSES}: ANR-LLM time / BCE time (overhead)",
                "anr_llm",
                "ce",
                timings["anr_llm"]["median_s"],
                base,
                "s",
            )
        )
    print_table(results["losses"])

    settings = [("tiny", 64, 16)] + ([] if args.quick else [("paper", 224, 8)])
    for variant, size, batch in settings:
        cases = {name: train_step(variant, name, size, batch) for name in ("ce", "anr_llm")}
        timings = compare(cases, repeats=args.repeats)
        for name, fn in cases.items():
            median = timings[name]["median_s"]
            results["training"].append(
                {
                    "variant": variant,
                    "size": size,
                    "batch": batch,
                    "loss": name,
                    "step_s": median,
                    "images_per_s": batch / median,
                    "peak_mib": peak_memory_mib(fn),
                }
            )
        claims.append(
            claim(
                f"training step {variant} {size}px B={batch}: ANR-LLM time / BCE time",
                "anr_llm",
                "ce",
                timings["anr_llm"]["median_s"],
                timings["ce"]["median_s"],
                "s",
            )
        )
    print_table(results["training"])
    print_table(claims, ["claim", "ratio"])
    path = write_results("ltml_cxr", {**results, "claims": claims}, args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

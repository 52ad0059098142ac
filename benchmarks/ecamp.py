"""ECAMP pre-training step throughput with the context-guided super-resolution branch on and off.

One step = forward (MAE encoder + decoder, [SR head], fused BERT MLM), the three losses, backward and an
AdamW update, on random images/tokens (the data pipeline is not timed). Sizes: the demo ("tiny", 128 px
crops, 64 tokens, batch 8) and, without --quick, the paper ("paper", 448 px crops, 256 tokens, batch 2).
Claim measured side by side: the cost of the SR branch = step time with SR / step time without.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

# This script is named like the package it measures: keep its own folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.modules.pop("ecamp", None)

SIZES = {"tiny": (128, 64, 8, 1000), "paper": (448, 256, 2, 30000)}  # crop, tokens, batch, vocab


def make_step(variant: str, sr: bool):
    import torch

    from ecamp.module import ECAMPModule, decay_groups

    crop, tokens, batch_size, vocab = SIZES[variant]
    torch.manual_seed(0)
    module = ECAMPModule(variant, window_cells=6 if variant == "tiny" else 12, sr_weight=1.0 if sr else 0.0)
    optimizer = torch.optim.AdamW(decay_groups(module), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch_size, tokens), generator=g)
    batch = {
        "image": torch.randn(batch_size, 3, crop, crop, generator=g),
        "input_ids": ids,
        "labels": ids,
        "attention_mask": torch.ones(batch_size, tokens, dtype=torch.long),
        "weights": torch.ones(batch_size, tokens),
        "masked": torch.rand(batch_size, tokens, generator=g) < 0.7,
        "entity": torch.zeros(batch_size, tokens, dtype=torch.bool),
        "index": torch.arange(batch_size),
    }
    batch["entity"][:, 3] = True

    def step() -> None:
        loss = module.losses(batch, training=True)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, batch_size


def main() -> None:
    args = parse_args(__doc__)
    variants = ["tiny"] if args.quick else ["tiny", "paper"]
    rows, claims = [], []
    for variant in variants:
        steps = {f"{variant} SR on": make_step(variant, True), f"{variant} SR off": make_step(variant, False)}
        timings = compare({name: fn for name, (fn, _) in steps.items()}, repeats=args.repeats)
        for name, (fn, batch_size) in steps.items():
            median = timings[name]["median_s"]
            rows.append(
                {
                    "case": name,
                    "step_s": median,
                    "images_per_s": batch_size / median,
                    "peak_mib": peak_memory_mib(fn),
                }
            )
        on, off = timings[f"{variant} SR on"]["median_s"], timings[f"{variant} SR off"]["median_s"]
        claims.append(claim(f"{variant}: SR branch step cost", "SR on", "SR off", on, off, "s/step"))
    print_table(rows)
    for c in claims:
        print(f"{c['claim']}: {c['ratio']:.3f}x (SR on / SR off)")
    path = write_results("ecamp", {"rows": rows, "claims": claims}, args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

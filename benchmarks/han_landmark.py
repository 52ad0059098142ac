"""HAN benchmark: Bi-Level Routing Attention (BRA) against full global attention, and whole-model cost.

Measured side by side in one run with ``benchmarks/_harness.py`` (random weights; speed does not depend
on them):

1. One attention layer, forward + backward, batch 1, at HAN's stage shapes (stages 1-4: widths 64/128/320/
   512, heads 2/4/10/16, n_win 16/16/16/8, topk 1/4/8/16, K/V pooled to 4x4 per region): BRA against the
   same module with global attention (``topk=-2``), both with the attention matrix materialised
   (``fused_attention=False``), so the comparison is like for like. Timed in interleaved rounds; peak memory
   is the harness's one measure (peak RSS growth of a forked child on CPU). Where the full attention's
   matrices (~3 x heads x N^2 x 4 bytes) exceed ``--memory-cap-gb`` it is "infeasible" with that estimate.
2. Whole model: inference and one AdamW training step of ``tiny`` at the demo's 128x128 (and of ``paper``
   at 512x512 at full size).

``--quick``: input 128x128 (stage token counts 4096/1024/256/64, n_win 4) and the tiny model only.
Writes ``benchmarks/results/han_landmark[.quick].json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that `import han_landmark`
# finds the installed package and `import _harness` still finds the harness beside this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

STAGES = [(64, 2, 16, 1), (128, 4, 16, 4), (320, 10, 16, 8), (512, 16, 8, 16)]  # width, heads, n_win, topk
KV_PER_WIN = 4


def attention_step(hw: tuple[int, int], stage: int, global_attention: bool, n_win: int | None = None):
    from han_landmark.models import BiLevelRoutingAttention

    width, heads, paper_n_win, topk = STAGES[stage]
    n_win = n_win or paper_n_win
    layer = BiLevelRoutingAttention(
        width, num_heads=heads, n_win=n_win, topk=-2 if global_attention else min(topk, n_win * n_win),
        kv_per_win=KV_PER_WIN, fused_attention=False,
    )  # fmt: skip
    x = torch.randn(1, *hw, width, requires_grad=True)

    def step() -> None:
        layer(x).sum().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)

    return step


def model_step(variant: str, hw: tuple[int, int], batch: int, train: bool):
    from han_landmark.models import create_model

    torch.manual_seed(0)
    model = create_model(variant)
    image = torch.randn(batch, 3, *hw)
    if not train:
        model.eval()

        def infer() -> None:
            with torch.no_grad():
                model(image)

        return infer
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = sum(h.square().mean() for h in model(image))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    image_hw, n_win = ((128, 128), 4) if args.quick else ((512, 512), None)
    cap_mb = 2.5 * 1024
    rows, claims = [], []
    for stage in range(len(STAGES)):
        hw = (image_hw[0] // 2 ** (stage + 1), image_hw[1] // 2 ** (stage + 1))
        tokens, heads = hw[0] * hw[1], STAGES[stage][1]
        needed_mb = 3 * heads * tokens * tokens * 4 / 2**20
        cases = {"bra": attention_step(hw, stage, False, n_win)}
        if needed_mb <= cap_mb:
            cases["full"] = attention_step(hw, stage, True, n_win)
        times = compare(cases, args.repeats)
        memory = {name: peak_memory_mib(fn) for name, fn in cases.items()}
        row = {
            "stage": stage + 1,
            "tokens": tokens,
            "bra_s": times["bra"]["median_s"],
            "bra_mib": memory["bra"],
        }
        if "full" in cases:
            row.update(full_s=times["full"]["median_s"], full_mib=memory["full"])
            size = f"stage {stage + 1}, {tokens} tokens"
            claims.append(claim(f"BRA vs full attention time ({size})", "full attention", "BRA",
                                row["full_s"], row["bra_s"], "s"))  # fmt: skip
            claims.append(claim(f"BRA vs full attention memory ({size})", "full attention", "BRA",
                                max(row["full_mib"], 1e-3), max(row["bra_mib"], 1e-3), "MiB"))  # fmt: skip
        else:
            row.update(full_s="infeasible", full_mib=f">{needed_mb:.0f} needed")
        rows.append(row)
    print(f"BRA vs full attention, input {image_hw[0]}x{image_hw[1]}, fwd+bwd, median of {args.repeats}")
    print_table(rows)

    jobs = [("tiny", (128, 128), 4)] + ([] if args.quick else [("paper", (512, 512), 1)])
    model_rows = []
    for variant, hw, batch in jobs:
        cases = {
            "inference": model_step(variant, hw, batch, False),
            "train_step": model_step(variant, hw, batch, True),
        }
        times = compare(cases, args.repeats)
        for what, fn in cases.items():
            seconds = times[what]["median_s"]
            model_rows.append({"variant": variant, "input": f"{hw[0]}x{hw[1]}", "batch": batch, "what": what,
                               "s": seconds, "images_per_s": batch / seconds,
                               "peak_mib": peak_memory_mib(fn)})  # fmt: skip
    print("\nwhole model")
    print_table(model_rows)
    path = write_results(
        "han_landmark",
        {"image_hw": image_hw, "attention": rows, "models": model_rows, "claims": claims},
        args.quick,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

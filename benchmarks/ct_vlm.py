"""ct-vlm benchmark: visual tokens and LLM prefill time with the 3D conv projector against flattening every
ViT token through a linear projector (the paper's efficiency claim), and greedy generation tokens/s.

Both models share the ViT and the (random, locally built) Llama; only the projector differs. The ratio is
linear / conv prefill time, measured side by side in one process (interleaved rounds, median).

``--quick``: the ``tiny`` ViT (4^3 grid: 8 vs 64 tokens) and a 2-layer Llama of width 64. Without it: a
128x128x64 volume, (16, 16, 8) patches (8^3 grid: 64 vs 512 tokens), ViT width 256 / depth 4, a 4-layer Llama
of width 256. Writes ``benchmarks/results/ct_vlm[.quick].json``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

from ct_vlm.data import demo_corpus, format_prompt, tokenize_conversations  # noqa: E402
from ct_vlm.language import load_language_model, write_tiny_language_model  # noqa: E402
from ct_vlm.models import create_model  # noqa: E402


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        sizes, hidden, layers = {}, 64, 2
    else:
        sizes = {"img_size": (128, 128, 64), "patch_size": (16, 16, 8), "embed_dim": 256, "depth": 4,
                 "num_heads": 8}  # fmt: skip
        hidden, layers = 256, 4
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_language_model(folder, demo_corpus(), hidden=hidden, layers=layers)
        models = {}
        for projector in ("conv", "linear"):
            lm, tokenizer, image_id = load_language_model(folder)
            torch.manual_seed(0)
            models[projector] = create_model("tiny", language_model=lm, image_token_id=image_id,
                                             projector=projector, **sizes).eval()  # fmt: skip
    size = models["conv"].vision.img_size
    volume = torch.rand(1, 1, *size)
    tokens = tokenize_conversations(
        tokenizer, [format_prompt("Write the radiology report for this CT scan.")]
    )

    def prefill(model):
        return lambda: model.next_token_logits(volume, tokens["input_ids"], tokens["attention_mask"])

    def generation(model, n=32):
        return lambda: model.generate(volume, **tokens, max_new_tokens=n, min_new_tokens=n,
                                      pad_token_id=tokenizer.pad_token_id)  # fmt: skip

    with torch.no_grad():
        cases = {f"prefill/{k}": prefill(m) for k, m in models.items()}
        cases |= {f"generate32/{k}": generation(m) for k, m in models.items()}
        timed = compare(cases, repeats=args.repeats)
        memory = {k: peak_memory_mib(prefill(m)) for k, m in models.items()}
    rows = []
    for k, m in models.items():
        rows.append({"projector": k, "visual_tokens": m.num_visual_tokens,
                     "prefill_ms": 1000 * timed[f"prefill/{k}"]["median_s"],
                     "generate_tok_per_s": 32 / timed[f"generate32/{k}"]["median_s"],
                     "prefill_peak_mib": memory[k]})  # fmt: skip
    print_table(rows)
    claims = [
        claim(
            "visual tokens", "linear", "conv", rows[1]["visual_tokens"], rows[0]["visual_tokens"], "tokens"
        ),
        claim("LLM prefill time", "linear", "conv", rows[1]["prefill_ms"], rows[0]["prefill_ms"], "ms"),
    ]
    path = write_results("ct_vlm", {"volume": list(size), "rows": rows, "claims": claims}, args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

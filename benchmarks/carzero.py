"""CARZero benchmark: the cost of the B x B cross-attention similarity, and zero-shot throughput.

Measured side by side in one run with ``benchmarks/_harness.py`` (interleaved rounds, median, one peak-memory
measure; random weights, speed does not depend on them):

1. The Similarity Representation computing S_i2t and S_t2i (both B x B) against the dot-product (CLIP-style)
   B x B similarity of the same global features, at the paper's width (D 768, 4 layers, 4 heads, FFN 1024,
   197 image and 98 text tokens): time and peak memory per B. CARZero runs the fusion once per
   (image, text) pair, so its cost grows with B^2; the claim recorded is this cost as a ratio against the dot
   product, measured here (ratio < 1: CARZero is slower).
2. Zero-shot scoring of a batch of images against C findings with the prompt features cached (encoded once,
   as `carzero zeroshot`/`predict` do) against re-encoding the prompts for every batch.

``--quick``: B = 4, 8 and the demo-sized model (ViT 64 px, 384 wide; a 4-layer BERT, 384 wide) with C = 14
and 64; full: B = 16, 32, 64 and ViT-B/16 + BERT-base with C = 14 and 192.
Writes ``benchmarks/results/carzero[.quick].json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that `import carzero`
# finds the installed package and `import _harness` still finds the harness beside this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

from carzero.models import CARZero, ImageEncoder, SimilarityRepresentation, TextEncoder  # noqa: E402

PAPER_FUSION = {"dim": 768, "depth": 4, "num_heads": 4, "ffn_dim": 1024}
IMAGE_TOKENS, TEXT_TOKENS = 197, 98  # [CLS; 196 patches] and [sentence; 97 words]


def similarity_cases(batch: int) -> dict:
    """Both directions of the fusion, and the dot product, on random tokens of the paper's shapes."""
    torch.manual_seed(0)
    fusion = SimilarityRepresentation(**PAPER_FUSION).eval()
    image_memory = torch.randn(batch, IMAGE_TOKENS, PAPER_FUSION["dim"])
    text_memory = torch.randn(batch, TEXT_TOKENS, PAPER_FUSION["dim"])

    @torch.no_grad()
    def cross_attention() -> None:
        fusion(image_memory, text_memory[:, 0])  # S_i2t (B, B)
        fusion(text_memory, image_memory[:, 0])  # S_t2i (B, B)

    @torch.no_grad()
    def dot_product() -> None:
        image = torch.nn.functional.normalize(image_memory[:, 0], dim=-1)
        text = torch.nn.functional.normalize(text_memory[:, 0], dim=-1)
        image @ text.T

    return {"cross_attention": cross_attention, "dot_product": dot_product}


def zero_shot_model(quick: bool) -> CARZero:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    if quick:  # the demo's sizes: ViT at 64 px, 384 wide; a MiniLM-sized BERT; a 2-layer fusion
        vit = ImageEncoder(img_size=64, patch_size=16, embed_dim=384, depth=4, num_heads=6)
        bert = BertConfig(hidden_size=384, num_hidden_layers=4, num_attention_heads=6, intermediate_size=1536)
        fusion = {"fusion_depth": 2, "fusion_ffn_dim": 512}
    else:  # the paper's: ViT-B/16 at 224 and a BERT-base layout
        vit = ImageEncoder(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12)
        bert = BertConfig()
        fusion = {"fusion_depth": 4, "fusion_ffn_dim": 1024}
    text = TextEncoder(BertModel(bert), last_n_layers=4, max_words=97)
    return CARZero(vit, text, **fusion).eval()


def zero_shot_cases(model: CARZero, classes: int, batch: int) -> dict:
    size = model.image_encoder.vit.patch_embed.img_size[0]
    images = torch.randn(batch, 3, size, size)
    ids = torch.randint(1000, 20000, (classes, 8))  # "there is <finding>": about 8 tokens
    tokens = (ids, torch.ones_like(ids), torch.zeros_like(ids, dtype=torch.bool))
    with torch.no_grad():
        prompts = model.encode_text(*tokens)  # encoded once, as `carzero zeroshot` does

    @torch.no_grad()
    def cached() -> None:
        image_global, image_memory = model.encode_image(images)
        model.zero_shot_scores(image_global, image_memory, prompts[0], prompts[1])

    @torch.no_grad()
    def uncached() -> None:
        image_global, image_memory = model.encode_image(images)
        sentence, memory, _ = model.encode_text(*tokens)
        model.zero_shot_scores(image_global, image_memory, sentence, memory)

    return {"cached": cached, "uncached": uncached}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    batch_sizes = (4, 8) if args.quick else (16, 32, 64)
    class_counts = (14, 64) if args.quick else (14, 192)
    claims, similarity_rows = [], []
    for batch in batch_sizes:
        cases = similarity_cases(batch)
        times = compare(cases, args.repeats)
        memory = {name: peak_memory_mib(fn) for name, fn in cases.items()}
        row = {
            "batch_size": batch,
            "pairs": batch * batch,
            "cross_attention_s": times["cross_attention"]["median_s"],
            "dot_product_s": times["dot_product"]["median_s"],
            "cross_attention_mib": memory["cross_attention"],
            "dot_product_mib": memory["dot_product"],
        }
        if similarity_rows:  # B^2 growth: the fusion runs once per (image, text) pair
            row["time_vs_previous_b"] = row["cross_attention_s"] / similarity_rows[-1]["cross_attention_s"]
        similarity_rows.append(row)
    largest = similarity_rows[-1]
    size = f"B = {largest['batch_size']}, D 768, 4 layers"
    claims.append(claim(f"B x B similarity time: dot product vs CARZero cross-attention ({size})",
                        "dot product (CLIP-style)", "cross-attention S_i2t + S_t2i",
                        largest["dot_product_s"], largest["cross_attention_s"], "s"))  # fmt: skip
    print(f"B x B similarity (S_i2t + S_t2i vs dot product), median of {args.repeats} interleaved rounds")
    print_table(similarity_rows)

    model = zero_shot_model(args.quick)
    batch, zero_shot_rows = 8, []
    for classes in class_counts:
        times = compare(zero_shot_cases(model, classes, batch), args.repeats)
        cached_s, uncached_s = times["cached"]["median_s"], times["uncached"]["median_s"]
        zero_shot_rows.append(
            {
                "classes": classes,
                "batch_size": batch,
                "images_per_s_cached": batch / cached_s,
                "images_per_s_uncached": batch / uncached_s,
                "cache_speedup": uncached_s / cached_s,
            }
        )
        claims.append(claim(f"zero-shot batch of {batch} images x {classes} findings: prompts re-encoded vs "
                            "cached", "prompts re-encoded per batch", "prompt features cached",
                            uncached_s, cached_s, "s"))  # fmt: skip
    cases = zero_shot_cases(model, class_counts[-1], batch)
    peak = peak_memory_mib(cases["cached"])
    print(f"zero-shot ({'demo' if args.quick else 'paper'} sizes), median of {args.repeats} rounds; "
          f"peak {peak:.0f} MiB (cached, C = {class_counts[-1]})")  # fmt: skip
    print_table(zero_shot_rows)
    print_table(claims, ["claim", "ratio"])
    path = write_results(
        "carzero",
        {
            "similarity": similarity_rows,
            "zero_shot": zero_shot_rows,
            "zero_shot_peak_mib": peak,
            "claims": claims,
            "notes": "Random weights. CARZero makes no speed claim; the first claim measures what its B x B "
            "cross-attention costs against a CLIP-style dot product in this run (ratio < 1 = slower).",
        },
        args.quick,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

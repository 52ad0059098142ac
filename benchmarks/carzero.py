"""CARZero benchmark: the B x B cross-attention fusion against the reference's and 0.2's, and zero-shot speed.

Measured side by side in one run with ``benchmarks/_harness.py`` (every case warmed up first, then >= 3
interleaved rounds, median; random weights, speed does not depend on them):

1. The Similarity Representation computing S_i2t and S_t2i (both B x B) at the paper's width (D 768, 4 layers,
   4 heads, FFN 1024, 197 image and 98 text tokens), five forwards with the same parameters:
   - ``reference``: shaped like the reference's (laihaoran/CARZero) decoder: sequence-first tensors (L, B, D)
     through ``nn.MultiheadAttention``;
   - ``v0.2``: carzero 0.2's batch-first ``nn.MultiheadAttention`` (transposes inside every layer), the
     baseline of issue 20;
   - ``ours``: the installed carzero's (B, Q, D) layout; each layer's attention on the side with fewer FLOPs
     (keys/values projected from the memory with ``scaled_dot_product_attention``, or W_k folded into the
     queries and W_v applied after the weighted sum), the first layer's query-only work once for all memories;
   - ``ours_memory_side`` / ``ours_query_side``: the same with every layer forced to one side (what the
     automatic choice picks between).
   Also the dot-product (CLIP-style) B x B similarity, for scale.
2. Zero-shot images/s of a batch of 8 images at C = 14 and C = 192 findings (prompt features and their
   per-layer keys/values cached, as `carzero zeroshot` does) against the bare image encoder's images/s, in
   fp32 and under bf16 autocast, and the fusion's time per batch against the encoder's.

``--quick``: B = 8, 16 and the demo-sized model (ViT 64 px, 384 wide; a 4-layer BERT, 384 wide; 2-layer
fusion), C = 14 and 64. Full: B = 16, 32, 64 and ViT-B/16 + BERT-base with C = 14 and 192.
Writes ``benchmarks/results/carzero[.quick].json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that `import carzero`
# finds the installed package and `import _harness` still finds the harness beside this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import contextlib  # noqa: E402

import torch  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

import carzero  # noqa: E402
from carzero.models import CARZero, ImageEncoder, SimilarityRepresentation, TextEncoder  # noqa: E402

PAPER_FUSION = {"dim": 768, "depth": 4, "num_heads": 4, "ffn_dim": 1024}
QUICK_FUSION = {"dim": 384, "depth": 2, "num_heads": 4, "ffn_dim": 512}
IMAGE_TOKENS, TEXT_TOKENS = 197, 98  # [CLS; 196 patches] and [sentence; 97 words]


def fusion_v02(fusion: SimilarityRepresentation, memory: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """carzero 0.2's forward: queries expanded over the memories, batch-first nn.MultiheadAttention."""
    memory = fusion.shared_norm(memory)
    tokens = fusion.shared_norm(queries).unsqueeze(0).expand(memory.shape[0], -1, -1)
    for layer in fusion.layers:
        attended, _ = layer.cross_attention(layer.norm_attention(tokens), memory, memory, need_weights=False)
        tokens = tokens + layer.dropout_attention(attended)
        tokens = tokens + layer.dropout_ffn(layer.ffn(layer.norm_ffn(tokens)))
    return fusion.head(fusion.dropout(fusion.shared_norm(tokens))).squeeze(-1)


def fusion_reference_shaped(
    fusion: SimilarityRepresentation, memory: torch.Tensor, queries: torch.Tensor
) -> torch.Tensor:
    """The reference decoder's data layout: sequence-first (L, B, D) tensors through nn.MultiheadAttention
    (``batch_first=False`` semantics via the functional call), the same parameters and arithmetic."""
    memory = fusion.shared_norm(memory).transpose(0, 1)  # (M, B, D)
    tokens = fusion.shared_norm(queries).unsqueeze(1).expand(-1, memory.shape[1], -1)  # (Q, B, D)
    for layer in fusion.layers:
        attention = layer.cross_attention
        attended, _ = torch.nn.functional.multi_head_attention_forward(
            layer.norm_attention(tokens), memory, memory, attention.embed_dim, attention.num_heads,
            attention.in_proj_weight, attention.in_proj_bias, None, None, False, 0.0,
            attention.out_proj.weight, attention.out_proj.bias, training=False, need_weights=False,
        )  # fmt: skip
        tokens = tokens + layer.dropout_attention(attended)
        tokens = tokens + layer.dropout_ffn(layer.ffn(layer.norm_ffn(tokens)))
    decoded = fusion.shared_norm(tokens).transpose(0, 1)  # (B, Q, D)
    return fusion.head(fusion.dropout(decoded)).squeeze(-1)


def forced_side(side: str):
    """Our fusion with every layer's attention on one side (``attention_side``), restored to "auto" after."""

    def forward(fusion: SimilarityRepresentation, memory: torch.Tensor, queries: torch.Tensor):
        for layer in fusion.layers:
            layer.attention_side = side
        try:
            return fusion(memory, queries)
        finally:
            for layer in fusion.layers:
                layer.attention_side = "auto"

    return forward


def similarity_cases(batch: int, settings: dict) -> dict:
    """Both B x B directions of the fusion (five forwards: reference-shaped, 0.2, ours automatic and with each
    side forced) and the dot product, random tokens."""
    torch.manual_seed(0)
    fusion = SimilarityRepresentation(**settings).eval()
    image_memory = torch.randn(batch, IMAGE_TOKENS, settings["dim"])
    text_memory = torch.randn(batch, TEXT_TOKENS, settings["dim"])

    def both(forward):
        @torch.no_grad()
        def run() -> torch.Tensor:
            s_i2t = forward(fusion, image_memory, text_memory[:, 0])  # (B, B)
            s_t2i = forward(fusion, text_memory, image_memory[:, 0])  # (B, B)
            return s_i2t + s_t2i

        return run

    @torch.no_grad()
    def dot_product() -> None:
        image = torch.nn.functional.normalize(image_memory[:, 0], dim=-1)
        text = torch.nn.functional.normalize(text_memory[:, 0], dim=-1)
        image @ text.T

    cases = {
        "reference": both(fusion_reference_shaped),
        "v0.2": both(fusion_v02),
        "ours": both(lambda f, m, q: f(m, q)),
        "ours_memory_side": both(forced_side("memory")),
        "ours_query_side": both(forced_side("query")),
        "dot_product": dot_product,
    }
    # The implementations compute the same function: check before timing.
    expected = cases["v0.2"]()
    for name in ("reference", "ours", "ours_memory_side", "ours_query_side"):
        torch.testing.assert_close(cases[name](), expected, rtol=1e-4, atol=1e-4, msg=name)
    return cases


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


def zero_shot_cases(model: CARZero, classes: int, batch: int, dtype: torch.dtype | None) -> dict:
    """Bare encoder, full zero-shot scoring (cached prompts) and the fusion alone, for one batch."""
    size = model.image_encoder.vit.patch_embed.img_size[0]
    images = torch.randn(batch, 3, size, size)
    ids = torch.randint(1000, 20000, (classes, 8))  # "there is <finding>": about 8 tokens
    tokens = (ids, torch.ones_like(ids), torch.zeros_like(ids, dtype=torch.bool))
    autocast = (
        contextlib.nullcontext if dtype is None else lambda: torch.autocast(device_type="cpu", dtype=dtype)
    )
    with torch.no_grad(), autocast():
        prompts = model.encode_text(*tokens)  # encoded once, as `carzero zeroshot` does
        prompt_kv = model.fusion.memory_keys_values(prompts[1])  # so are their keys and values
        image_global, image_memory = model.encode_image(images)

    @torch.no_grad()
    def encoder() -> None:
        with autocast():
            model.encode_image(images)

    @torch.no_grad()
    def zero_shot() -> None:
        with autocast():
            g, m = model.encode_image(images)
            model.zero_shot_scores(g, m, prompts[0], prompts[1], None, prompt_kv)

    @torch.no_grad()
    def fusion() -> None:
        with autocast():
            model.zero_shot_scores(image_global, image_memory, prompts[0], prompts[1], None, prompt_kv)

    return {"encoder": encoder, "zero_shot": zero_shot, "fusion": fusion}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    batch_sizes = (8, 16) if args.quick else (16, 32, 64)
    class_counts = (14, 64) if args.quick else (14, 192)
    settings = QUICK_FUSION if args.quick else PAPER_FUSION
    claims, similarity_rows = [], []
    for batch in batch_sizes:
        cases = similarity_cases(batch, settings)
        times = compare(cases, args.repeats)
        row = {"batch_size": batch, "pairs": batch * batch}
        row.update({f"{name}_s": times[name]["median_s"] for name in cases})
        row["ours_vs_v0.2"] = row["ours_s"] / row["v0.2_s"]
        row["ours_memory_side_vs_v0.2"] = row["ours_memory_side_s"] / row["v0.2_s"]
        row["ours_query_side_vs_v0.2"] = row["ours_query_side_s"] / row["v0.2_s"]
        row["v0.2_vs_reference"] = row["v0.2_s"] / row["reference_s"]
        row["ours_mib"] = peak_memory_mib(cases["ours"])
        row["v0.2_mib"] = peak_memory_mib(cases["v0.2"])
        similarity_rows.append(row)
    largest = similarity_rows[-1]
    size = f"B = {largest['batch_size']}, D {settings['dim']}, {settings['depth']} layers"
    ours = f"carzero {carzero.__version__}"
    claims.append(claim(f"fusion S_i2t + S_t2i: 0.2 (batch-first MHA) vs {ours} ({size})",
                        "carzero 0.2 fusion", f"{ours} fusion", largest["v0.2_s"], largest["ours_s"],
                        "s"))  # fmt: skip
    claims.append(claim(f"fusion S_i2t + S_t2i time: reference-shaped (sequence-first) vs {ours} ({size})",
                        "reference-shaped fusion", f"{ours} fusion", largest["reference_s"],
                        largest["ours_s"], "s"))  # fmt: skip
    claims.append(claim(f"B x B similarity time: dot product vs CARZero cross-attention ({size})",
                        "dot product (CLIP-style)", f"cross-attention S_i2t + S_t2i ({ours})",
                        largest["dot_product_s"], largest["ours_s"], "s"))  # fmt: skip
    print(f"B x B fusion (S_i2t + S_t2i), median of {args.repeats} interleaved rounds")
    print_table(similarity_rows)

    model = zero_shot_model(args.quick)
    batch, zero_shot_rows = 8, []
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        for classes in class_counts:
            times = compare(zero_shot_cases(model, classes, batch, dtype), args.repeats)
            encoder_s, zero_shot_s = times["encoder"]["median_s"], times["zero_shot"]["median_s"]
            fusion_s = times["fusion"]["median_s"]
            zero_shot_rows.append(
                {
                    "precision": precision,
                    "classes": classes,
                    "batch_size": batch,
                    "encoder_images_per_s": batch / encoder_s,
                    "zero_shot_images_per_s": batch / zero_shot_s,
                    "zero_shot_vs_encoder_rate": encoder_s / zero_shot_s,
                    "fusion_s_per_batch": fusion_s,
                    "encoder_s_per_batch": encoder_s,
                    "fusion_vs_encoder_time": fusion_s / encoder_s,
                }
            )
            claims.append(claim(f"zero-shot rate vs bare encoder, C = {classes}, {precision}, batch {batch}",
                                "bare image encoder", "zero-shot scoring (prompts cached)", encoder_s,
                                zero_shot_s, "s"))  # fmt: skip
    peak = peak_memory_mib(zero_shot_cases(model, class_counts[-1], batch, None)["zero_shot"])
    print(f"zero-shot ({'demo' if args.quick else 'paper'} sizes), median of {args.repeats} rounds; "
          f"peak {peak:.0f} MiB (fp32, C = {class_counts[-1]})")  # fmt: skip
    print_table(zero_shot_rows)
    print_table(claims, ["claim", "ratio"])
    path = write_results(
        "carzero",
        {
            "similarity": similarity_rows,
            "zero_shot": zero_shot_rows,
            "zero_shot_peak_mib": peak,
            "claims": claims,
            "notes": "Random weights. Ratios are baseline / candidate time from the same run (> 1: the "
            "candidate is faster). The five fusion forwards are checked equal before timing. Issue 20's "
            "goals: ours_vs_v0.2 <= 0.7 at the largest B; zero_shot_vs_encoder_rate >= 0.9 at C = 14; "
            "fusion_vs_encoder_time <= 1 at C = 192.",
        },
        args.quick,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

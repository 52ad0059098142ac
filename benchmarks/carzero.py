"""CARZero benchmark: cost of the B x B cross-attention similarity and zero-shot throughput.

Measures, side by side in one run, at the paper's sizes (D = 768, ViT-B/16 at 224, BERT-base layout):
  1. the Similarity Representation computing S_i2t and S_t2i (both B x B) at B = 64, 128, 256, against the
     dot-product (CLIP-style) B x B similarity of the same global features: time, peak memory, ratios;
  2. zero-shot throughput (images/s) for C = 14 and C = 192 findings with cached prompt features, and the
     speed-up of the cache against re-encoding the prompts for every batch.
Weights are random (speed does not depend on them). Writes benchmarks/results/carzero.json.

    python benchmarks/carzero.py [--device cuda] [--batch-sizes 64 128 256] [--images 32]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import resource
import sys
import time
from pathlib import Path

# This script is named like the package it measures: keep its own folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from transformers import BertConfig, BertModel  # noqa: E402

from carzero.models import CARZero, SimilarityRepresentation, TextEncoder, image_encoder  # noqa: E402
from medzoo.io import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "carzero.json"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn, device: torch.device, repeats: int = 1, warmup: bool = True) -> float:
    if warmup:
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


@torch.no_grad()
def similarity_cost(batch_sizes: list[int], device: torch.device, repeats: int) -> list[dict]:
    fusion = SimilarityRepresentation(768, depth=4, num_heads=4, ffn_dim=1024).to(device).eval()
    rows = []
    for batch in batch_sizes:
        image_memory = torch.randn(batch, 197, 768, device=device)  # [CLS; 196 patches]
        text_memory = torch.randn(batch, 98, 768, device=device)  # [sentence; 97 words]

        def both_directions(im=image_memory, tm=text_memory):
            s_i2t = fusion(im, tm[:, 0])  # (B, B)
            s_t2i = fusion(tm, im[:, 0])  # (B, B)
            return s_i2t, s_t2i

        def dot_product(im=image_memory, tm=text_memory):
            return (
                torch.nn.functional.normalize(im[:, 0], dim=-1)
                @ torch.nn.functional.normalize(tm[:, 0], dim=-1).T
            )

        reset_peak(device)
        # CPU: the large sizes take minutes, so only the first size gets a warm-up call.
        seconds = timed(
            both_directions, device, repeats, warmup=device.type == "cuda" or batch == batch_sizes[0]
        )
        memory = peak_memory_mb(device)
        dot_seconds = timed(dot_product, device, max(repeats, 10))
        rows.append(
            {
                "batch_size": batch,
                "pairs": batch * batch,
                "cross_attention_s": seconds,
                "dot_product_s": dot_seconds,
                "cross_attention_over_dot_product": seconds / dot_seconds,
                "peak_memory_mb": memory,
            }
        )
        print(
            f"B={batch:4d}  pairs={batch * batch:6d}  cross-attention S_i2t+S_t2i {seconds * 1e3:9.1f} ms  "
            f"dot product {dot_seconds * 1e3:7.3f} ms  ratio {seconds / dot_seconds:8.0f}x  "
            f"peak {memory:8.0f} MB",
            flush=True,
        )
    for previous, current in itertools.pairwise(rows):
        ratio = current["cross_attention_s"] / previous["cross_attention_s"]
        current["time_ratio_vs_previous_b"] = ratio
        pairs = current["pairs"] / previous["pairs"]
        print(
            f"B {previous['batch_size']} -> {current['batch_size']}: time x{ratio:.2f} (pairs x{pairs:.0f})"
        )
    return rows


@torch.no_grad()
def zero_shot_throughput(
    class_counts: list[int], n_images: int, batch: int, device: torch.device
) -> list[dict]:
    torch.manual_seed(0)
    text = TextEncoder(BertModel(BertConfig()), last_n_layers=4, max_words=97)  # BERT-base layout
    model = CARZero(image_encoder("base"), text).to(device).eval()
    images = torch.randn(batch, 3, 224, 224, device=device)
    rows = []
    for classes in class_counts:
        ids = torch.randint(1000, 20000, (classes, 8), device=device)  # "there is <finding>" ~ 8 tokens
        attention = torch.ones_like(ids)
        continuation = torch.zeros_like(ids, dtype=torch.bool)
        prompts = model.encode_text(ids, attention, continuation)  # cached once

        def cached(prompts=prompts):
            g, m = model.encode_image(images)
            return model.zero_shot_scores(g, m, prompts[0], prompts[1])

        def uncached(tokens=(ids, attention, continuation)):
            g, m = model.encode_image(images)
            sentence, memory, _ = model.encode_text(*tokens)
            return model.zero_shot_scores(g, m, sentence, memory)

        batches = max(1, n_images // batch)
        reset_peak(device)
        cached_s = timed(cached, device, batches)
        memory = peak_memory_mb(device)
        uncached_s = timed(uncached, device, 1)
        row = {
            "classes": classes,
            "batch_size": batch,
            "images_per_s_cached": batch / cached_s,
            "images_per_s_uncached": batch / uncached_s,
            "cache_speedup": uncached_s / cached_s,
            "peak_memory_mb": memory,
        }
        rows.append(row)
        print(
            f"C={classes:4d}  zero-shot {row['images_per_s_cached']:7.2f} images/s with cached prompts, "
            f"{row['images_per_s_uncached']:7.2f} without (x{row['cache_speedup']:.2f})  "
            f"peak {memory:8.0f} MB",
            flush=True,
        )
    ratio = rows[-1]["images_per_s_cached"] / rows[0]["images_per_s_cached"]
    rows[-1]["throughput_ratio_vs_first"] = ratio
    print(f"C={class_counts[-1]} / C={class_counts[0]} throughput ratio: {ratio:.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--classes", type=int, nargs="+", default=[14, 192])
    parser.add_argument("--images", type=int, default=16, help="images timed per class count")
    parser.add_argument("--image-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    similarity = similarity_cost(args.batch_sizes, device, args.repeats)
    throughput = zero_shot_throughput(args.classes, args.images, args.image_batch, device)
    write_json(
        args.output,
        {
            "package": "carzero",
            "device": str(device),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "peak_memory_note": "CUDA: max allocated per measurement; CPU: process peak RSS so far",
            "similarity_matrix": similarity,
            "zero_shot": throughput,
        },
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

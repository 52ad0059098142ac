"""fewshot-augsearch benchmark: search time against the number of candidates, and episode throughput.

Measured side by side in one run with ``benchmarks/_harness.py`` (warm-up, interleaved rounds, median):

- the ``grid`` search on synthetic pseudo-class groups (6 groups x 5 crops of 48^2; ``--quick``: 4 x 4
  of 32^2), 2 augmentations per anchor, at most 24 anchors, with 2, 4 and 8 candidate factors, for the
  SSIM and the histogram-MI similarity; the ratio 8 / 2 candidates shows how the cost grows (linear: 4);
- episode generation (superpixel pick + two augmentations of one slice, the default theta) per episode;
- one SSL-ALPNet training step (forward with the alignment loss, backward, SGD) per episode, ``tiny`` on
  64^2 slices and, without ``--quick``, ``paper`` (ResNet-101, output stride 8) on 256^2; peak memory is the
  harness's one measure.

The paper makes no efficiency claim; the claims below are this implementation's cost ratios, measured here.
Writes ``benchmarks/results/fewshot_augsearch[.quick].json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package: its folder goes to the END of sys.path, so that the package import
# finds the installed package and `import _harness` still finds the harness beside this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _harness import claim, compare, parse_args, peak_memory_mib, print_table, write_results  # noqa: E402

GRIDS = {2: (0.0, 2.0), 4: (0.0, 1.0, 2.0, 4.0), 8: (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)}


def _groups(n_groups: int = 6, size: int = 5, pixels: int = 48) -> list[list[np.ndarray]]:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:pixels, :pixels] / pixels
    groups = []
    for _ in range(n_groups):
        base = np.where(((yy - 0.5) / 0.35) ** 2 + ((xx - 0.5) / 0.28) ** 2 < 1, 0.5, 0.0)
        cy, cx = rng.uniform(0.35, 0.65, 2)
        base[((yy - cy) / 0.1) ** 2 + ((xx - cx) / 0.08) ** 2 < 1] = 0.9
        rotations = rng.uniform(-10, 10, size)
        groups.append([np.clip(ndimage.rotate(base, r, reshape=False, order=1), 0, 1) for r in rotations])
    return groups


def search_case(groups, similarity: str, n_candidates: int):
    from fewshot_augsearch.search import search
    from fewshot_augsearch.similarity import DISTANCES, SIMILARITIES

    def run() -> None:
        search(
            groups,
            SIMILARITIES[similarity],
            DISTANCES["wasserstein"],
            "grid",
            n_augment=2,
            max_anchors=24,
            factors=GRIDS[n_candidates],
        )

    return run


def episode_case(image_size: int):
    from fewshot_augsearch.augment import AugmentationParams
    from fewshot_augsearch.data import EpisodeDataset, Scan, slice_superpixels

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:image_size, :image_size] / image_size
    body = (((yy - 0.5) / 0.4) ** 2 + ((xx - 0.5) / 0.35) ** 2 < 1).astype(np.float32)
    image = np.stack([body * (0.5 + 0.05 * rng.standard_normal(body.shape)) for _ in range(8)]).clip(0, 1)
    min_size = max(1, round(400 * (image_size / 256) ** 2))
    superpixels = np.stack([slice_superpixels(s, min_size=min_size) for s in image])
    scan = Scan("b", image.astype(np.float32), None, superpixels, image.shape, np.eye(4), Path("b"))
    dataset = EpisodeDataset([scan], AugmentationParams(), length=10**6)
    counter = iter(range(10**6))
    return lambda: dataset[next(counter)], dataset


def train_case(variant: str, dataset, device: torch.device):
    from fewshot_augsearch.models import create_model

    model = create_model(variant).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    weight = torch.tensor([0.05, 1.0], device=device)
    episode = {k: v[None].to(device) if torch.is_tensor(v) else v for k, v in dataset[0].items()}

    def step() -> None:
        out = model(
            episode["support_image"], episode["support_mask"][:, None], episode["query_image"], align=True
        )
        loss = F.cross_entropy(out.logits, episode["query_mask"], weight=weight) + out.align_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    groups = _groups(4, 4, 32) if args.quick else _groups()
    cases = {(sim, n): search_case(groups, sim, n) for sim in ("ssim", "mutual_information") for n in GRIDS}
    times = compare({f"{s}@{n}": fn for (s, n), fn in cases.items()}, args.repeats)
    search_rows = [
        {
            "similarity": s,
            "candidates": n,
            "s": times[f"{s}@{n}"]["median_s"],
            "s_per_candidate": times[f"{s}@{n}"]["median_s"] / n,
        }
        for s, n in cases
    ]
    claims = [
        claim(
            f"grid search cost, 8 vs 2 candidates ({s})",
            "8 candidates",
            "2 candidates",
            times[f"{s}@8"]["median_s"],
            times[f"{s}@2"]["median_s"],
            "s",
        )
        for s in ("ssim", "mutual_information")
    ]
    claims.append(
        claim(
            "similarity cost, SSIM vs histogram MI (8 candidates)",
            "ssim",
            "mutual_information",
            times["ssim@8"]["median_s"],
            times["mutual_information@8"]["median_s"],
            "s",
        )
    )

    throughput_rows = []
    sizes = [("tiny", 64)] if args.quick else [("tiny", 64), ("paper", 256)]
    for variant, image_size in sizes:
        make_episode, dataset = episode_case(image_size)
        train = train_case(variant, dataset, device)
        t = compare({"episode": make_episode, "train_step": train}, args.repeats)
        memory = peak_memory_mib(train, device.type)
        for name in ("episode", "train_step"):
            throughput_rows.append(
                {
                    "variant": variant,
                    "slice": f"{image_size}^2",
                    "what": name,
                    "s": t[name]["median_s"],
                    "episodes_per_s": 1.0 / t[name]["median_s"],
                    "peak_mib": memory if name == "train_step" else float("nan"),
                }
            )
    shape = f"{len(groups)} groups x {len(groups[0])} crops of {groups[0][0].shape[0]}^2"
    print(f"grid search, {shape}, {args.threads} threads, median of {args.repeats}")
    print_table(search_rows)
    print(f"\nepisode throughput ({device})")
    print_table(throughput_rows)
    for c in claims:
        print(f"{c['claim']}: {c['ratio']:.2f}x")
    payload = {"search": search_rows, "episodes": throughput_rows, "claims": claims}
    print(f"wrote {write_results('fewshot_augsearch', payload, args.quick)}")


if __name__ == "__main__":
    main()

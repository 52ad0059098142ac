"""The search: wider ranges for a larger known intra-class spread; distributions with known answers."""

import numpy as np
import pytest
from scipy import ndimage

from fewshot_augsearch.augment import AugmentationParams
from fewshot_augsearch.search import intra_class_similarities, intra_instance_similarities, search
from fewshot_augsearch.similarity import DISTANCES, SIMILARITIES
from medzoo.errors import MedzooDataError


def _phantom(rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A body-like ellipse with two random inner blobs, smoothed; values in [0, 1]."""
    yy, xx = np.mgrid[:size, :size] / size
    image = np.where(((yy - 0.5) / 0.35) ** 2 + ((xx - 0.5) / 0.28) ** 2 < 1, 0.5, 0.0)
    for value in (0.9, 0.25):
        cy, cx = rng.uniform(0.35, 0.65, 2)
        image[((yy - cy) / 0.1) ** 2 + ((xx - cx) / 0.08) ** 2 < 1] = value
    return ndimage.gaussian_filter(image, 1.0)


def known_spread_groups(spread: float, n_groups: int = 4, size: int = 5, seed: int = 0) -> list:
    """Groups whose members are one anatomy under rotations of +-spread degrees and shifts of +-spread/4 px
    (scipy.ndimage, not our augmentation code): the true intra-class variation is known."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n_groups):
        base = _phantom(rng)
        group = []
        for _ in range(size):
            rotated = ndimage.rotate(base, rng.uniform(-spread, spread), reshape=False, order=1)
            group.append(
                np.clip(ndimage.shift(rotated, rng.uniform(-spread / 4, spread / 4, 2), order=1), 0, 1)
            )
        groups.append(group)
    return groups


def _search(spread: float, strategy: str, **kwargs):
    return search(
        known_spread_groups(spread),
        SIMILARITIES["ssim"],
        DISTANCES["wasserstein"],
        strategy,
        n_augment=2,
        max_anchors=12,
        **kwargs,
    )


def test_grid_search_returns_wider_ranges_for_a_larger_intra_class_spread():
    narrow, wide = _search(2.0, "grid"), _search(20.0, "grid")
    assert narrow.intra_class_mean > wide.intra_class_mean  # the planted spread is what the search sees
    assert wide.factors["affine"] > narrow.factors["affine"]
    assert wide.params.rotate > narrow.params.rotate and wide.params.scale[1] > narrow.params.scale[1]


def test_stepwise_growth_stops_earlier_for_a_tighter_class():
    narrow, wide = (
        _search(2.0, "stepwise", step=0.5, max_factor=4.0),
        _search(20.0, "stepwise", step=0.5, max_factor=4.0),
    )
    assert wide.factors["affine"] > narrow.factors["affine"]
    assert sum(wide.factors.values()) > sum(narrow.factors.values())


def test_chosen_theta_lowers_the_distance_below_the_extremes():
    result = _search(10.0, "grid", factors=(0.0, 1.0, 2.0, 8.0))
    by_factor = {c["factors"]["affine"]: c["distance"] for c in result.candidates}
    assert result.distance == pytest.approx(min(by_factor.values()))
    assert result.distance < by_factor[8.0]


def test_bayesian_strategy_evaluates_init_plus_iterations():
    result = _search(10.0, "bayesian", n_init=3, n_iter=2, max_factor=4.0)
    assert len(result.candidates) == 5
    assert result.distance <= max(c["distance"] for c in result.candidates)
    assert all(0 <= f <= 4.0 for f in result.factors.values())


def test_identity_theta_gives_perfect_self_similarity():
    crops = [_phantom(np.random.default_rng(i)) for i in range(3)]
    identity = AugmentationParams(0, 0, 0, (1, 1), 0, 5, (1, 1), 0, 0)
    values = intra_instance_similarities(crops, identity, SIMILARITIES["ssim"], n_augment=2)
    assert values.shape == (6,) and np.allclose(values, 1.0, atol=1e-3)


def test_intra_class_uses_every_pair():
    groups = [[np.zeros((8, 8)), np.ones((8, 8)), np.zeros((8, 8))], [np.zeros((8, 8))]]
    values = intra_class_similarities(groups, lambda a, b: float(a.mean() == b.mean()))
    assert sorted(values.tolist()) == [0.0, 0.0, 1.0]  # 3 pairs of the first group; the singleton is ignored


def test_bad_search_inputs():
    with pytest.raises(MedzooDataError, match="strategy"):
        search(known_spread_groups(2.0, 1, 2), SIMILARITIES["ssim"], DISTANCES["kl"], "random")
    with pytest.raises(MedzooDataError, match="2 crops"):
        search([[np.zeros((8, 8))]], SIMILARITIES["ssim"], DISTANCES["kl"])


@pytest.mark.slow
def test_demo_target_search_width_grows_with_the_true_spread():
    """The demo's target: the searched theta widens monotonically with the planted intra-class spread
    (2, 10, 25 degrees), with the defaults (SSIM + Wasserstein-1) and with histogram MI + mean/std."""
    spreads = (2.0, 10.0, 25.0)
    for similarity, distance in (("ssim", "wasserstein"), ("mutual_information", "mean_std")):
        widths = []
        for spread in spreads:
            result = search(
                known_spread_groups(spread, n_groups=6, size=6, seed=1),
                SIMILARITIES[similarity],
                DISTANCES[distance],
                "grid",
                n_augment=3,
                max_anchors=24,
                factors=(0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
            )
            widths.append(result.params.rotate)
        assert widths[0] <= widths[1] <= widths[2] and widths[0] < widths[2], (similarity, distance, widths)
        if similarity == "ssim":  # the defaults also separate the middle spread from both ends
            assert widths[0] < widths[1] < widths[2], widths

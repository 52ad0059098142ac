"""Overlay PNGs: distinct colours for up to 40 landmarks and labels that scale with the image."""

from __future__ import annotations

import itertools

import numpy as np

from han_landmark.writers import PALETTE, landmark_palette, overlay_landmarks


def test_palette_has_40_distinct_colours_and_repeats_after():
    assert len(set(PALETTE)) == 40
    closest = min(np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(PALETTE, 2))
    assert closest > 25  # no two of the 40 are near-duplicates (0-255 RGB distance)
    assert landmark_palette(41)[40] == PALETTE[0]


def _label_height(size: int, colour_index: int = 0) -> int:
    centre = size / 2
    coords = np.full((colour_index + 1, 2), np.nan)
    coords[colour_index] = centre
    image = overlay_landmarks(np.zeros((size, size), np.uint8), coords)
    right = image[:, int(centre) + max(2, round(size / 120)) + 1 :].astype(int)
    # the label's fill: pixels near the landmark's colour (the dark stroke around it is left out)
    fill = np.abs(right - np.array(PALETTE[colour_index])).sum(-1) < 120
    rows = np.flatnonzero(fill.any(axis=1))
    return int(rows.max() - rows.min() + 1)


def test_labels_scale_with_the_image_and_use_the_landmark_colour():
    small, large = _label_height(200), _label_height(1600)
    assert small >= 5 and large >= 3 * small  # font max(10, min(H, W) / 40): 10 px vs 40 px
    assert _label_height(800, colour_index=37) > 0  # landmark 37 drawn in its own colour

"""Gaussian heatmap targets for landmarks and their decoding back to sub-pixel coordinates (batched torch).

Coordinate convention (the same everywhere in medzoo): a landmark is ``(x, y) = (column, row)`` in heatmap
pixels, and pixel ``[row, col]`` has its centre at ``(x, y) = (col, row)``. A landmark at ``(3.0, 5.0)`` is
therefore centred on pixel ``[5, 3]``, and the heatmap is exactly 1 there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medzoo.errors import MedzooDataError

__all__ = ["decode_heatmaps", "gaussian_heatmaps"]

REFINEMENTS = ("log_quadratic", "quadratic", "quarter_offset", "none")


def gaussian_heatmaps(
    coords: torch.Tensor,
    size: Sequence[int],
    sigma: float | torch.Tensor,
    *,
    alpha: float | None = None,
    alpha_floor: float = 1.05,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Unnormalised Gaussian target per landmark: ``g = exp(-((x - cx)^2 + (y - cy)^2) / (2 sigma^2))``.

    Args:
        coords: (B, K, 2) landmark positions as (x, y) pixels in heatmap space (see the module docstring).
            Positions may lie outside the map (the visible tail of the Gaussian is drawn). A landmark with a
            non-finite coordinate (a missing landmark) gets an all-zero map.
        size: (H, W) of the heatmaps.
        sigma: standard deviation in pixels, > 0: a float, or a tensor broadcastable to (B, K) (one sigma per
            landmark, as in learned-sigma heatmap regression).
        alpha: if given (> 1), UOD's ``alpha^Gaussian`` target ``h = alpha ** g`` with every value
            ``<= alpha_floor`` set to 0, as in the UOD reference's ground-truth generator (UOD uses
            ``sigma=10, alpha=10``). The peak is then ``alpha`` and the support is the disc where
            ``g > log(alpha_floor) / log(alpha)`` (radius ~2.78 sigma for alpha 10).
        alpha_floor: the cut-off of the alpha variant (1.05 in UOD).
        dtype: floating dtype of the result.

    Returns:
        (B, K, H, W) heatmaps on the device of ``coords``: values in [0, 1] with 1 at a landmark that sits on
        a pixel centre (plain), or in {0} U (alpha_floor, alpha] (alpha variant).
    """
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise MedzooDataError(
            "gaussian_heatmaps.coords", f"shape {tuple(coords.shape)}", "(B, K, 2) as (x, y)"
        )
    if len(size) != 2 or min(size) < 1:
        raise MedzooDataError("gaussian_heatmaps.size", f"{tuple(size)}", "(H, W) with H, W >= 1")
    height, width = int(size[0]), int(size[1])
    coords = coords.to(dtype)
    sigma_t = torch.as_tensor(sigma, dtype=dtype, device=coords.device)
    if torch.any(sigma_t <= 0):
        raise MedzooDataError("gaussian_heatmaps.sigma", f"{sigma}", "sigma > 0 pixels")
    sigma_t = torch.broadcast_to(sigma_t, coords.shape[:2])[..., None, None]  # (B, K, 1, 1)
    missing = ~torch.isfinite(coords).all(dim=-1)  # (B, K)
    coords = torch.where(missing[..., None], torch.zeros_like(coords), coords)
    xs = torch.arange(width, dtype=dtype, device=coords.device)
    ys = torch.arange(height, dtype=dtype, device=coords.device)
    # The 2D Gaussian is separable: exp(a + b) = exp(a) * exp(b), (B, K, 1, W) * (B, K, H, 1).
    gauss_x = torch.exp(-((xs - coords[..., 0, None]) ** 2)[..., None, :] / (2 * sigma_t**2))
    gauss_y = torch.exp(-((ys - coords[..., 1, None]) ** 2)[..., :, None] / (2 * sigma_t**2))
    heatmaps = gauss_x * gauss_y
    if alpha is not None:
        if alpha <= 1:
            raise MedzooDataError("gaussian_heatmaps.alpha", f"{alpha}", "alpha > 1 (UOD uses 10)")
        heatmaps = torch.pow(torch.as_tensor(alpha, dtype=dtype, device=coords.device), heatmaps)
        heatmaps = torch.where(heatmaps <= alpha_floor, torch.zeros_like(heatmaps), heatmaps)
    return torch.where(missing[..., None, None], torch.zeros_like(heatmaps), heatmaps)


def _axis_offset(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor, refine: str) -> torch.Tensor:
    """Sub-pixel offset of the peak from the middle of three equally spaced samples."""
    if refine == "quarter_offset":
        return 0.25 * torch.sign(right - left)
    if refine == "log_quadratic":
        # The log of a Gaussian is a parabola, so this is exact for Gaussian heatmaps (as in DARK,
        # Zhang et al. CVPR 2020, without its blur). Non-positive values are clamped before the log.
        tiny = torch.finfo(centre.dtype).tiny
        left, centre, right = (torch.log(v.clamp_min(tiny)) for v in (left, centre, right))
    curvature = left - 2 * centre + right
    offset = 0.5 * (left - right) / curvature
    # Only a concave triple has a maximum; otherwise keep the sample.
    return torch.where(curvature < 0, offset, torch.zeros_like(offset))


def _refine_axis(
    flat: torch.Tensor, index: torch.Tensor, stride: int, length: int, refine: str
) -> torch.Tensor:
    """Refined coordinate along one axis for peaks at flat index ``index`` (B, K).

    ``flat`` is (B, K, H*W); neighbours along the axis are ``stride`` apart in it. At a border the triple
    is shifted inwards (samples 0, 1, 2 or the last three), which is still exact for the log-quadratic fit
    of a Gaussian; ``quarter_offset`` keeps a border pixel as it is, having no outer neighbour to compare.
    """
    pos = torch.div(index, stride, rounding_mode="floor") % length
    if length < 3 or refine == "none":
        return pos.to(flat.dtype)
    centre_pos = pos.clamp(1, length - 2)
    at_border = (centre_pos != pos) if refine == "quarter_offset" else torch.zeros_like(pos, dtype=torch.bool)
    centre_index = index + (centre_pos - pos) * stride
    gather = lambda idx: torch.gather(flat, 2, idx[..., None])[..., 0]  # noqa: E731
    left, centre, right = gather(centre_index - stride), gather(centre_index), gather(centre_index + stride)
    coordinate = centre_pos.to(flat.dtype) + _axis_offset(left, centre, right, refine)
    coordinate = torch.where(at_border, pos.to(flat.dtype), coordinate)
    # For a unimodal peak the argmax pixel is the one nearest to the true peak, so stay within half a pixel.
    return torch.clamp(coordinate, pos.to(flat.dtype) - 0.5, pos.to(flat.dtype) + 0.5)


def decode_heatmaps(
    heatmaps: torch.Tensor, *, return_scores: bool = False, refine: str = "log_quadratic"
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Landmark positions from heatmaps: the argmax pixel, refined to sub-pixel precision per axis.

    Refinement, per axis, from the argmax pixel and its two neighbours along that axis:

    - ``"log_quadratic"`` (default): fit a parabola to the log values. Exact (to float precision) for a
      Gaussian heatmap of any sigma, also near borders; for other peak shapes it is a local quadratic fit.
    - ``"quadratic"``: fit a parabola to the raw values (biased for Gaussians, error < 0.5 px per axis).
    - ``"quarter_offset"``: move 0.25 px towards the larger neighbour (the classic pose-estimation shift;
      error <= 0.25 px per axis for symmetric peaks; no shift on a border pixel, where it is <= 0.5 px).
    - ``"none"``: the integer argmax.

    The refined coordinate is kept within 0.5 px of the argmax pixel. When the maximum occurs more than once
    the first one in row-major order is used.

    Args:
        heatmaps: (B, K, H, W) real-valued maps (any range; higher = more likely), on any device.
        return_scores: also return the peak value of each map.
        refine: one of ``"log_quadratic"``, ``"quadratic"``, ``"quarter_offset"``, ``"none"``.

    Returns:
        coords (B, K, 2) as (x, y) pixels in heatmap space, floating, on the device of ``heatmaps``; with
        ``return_scores``, ``(coords, scores)`` where scores (B, K) are the maxima.
    """
    if heatmaps.ndim != 4:
        raise MedzooDataError("decode_heatmaps.heatmaps", f"shape {tuple(heatmaps.shape)}", "(B, K, H, W)")
    if refine not in REFINEMENTS:
        raise MedzooDataError("decode_heatmaps.refine", repr(refine), f"one of {REFINEMENTS}")
    if not heatmaps.is_floating_point():
        heatmaps = heatmaps.float()
    height, width = heatmaps.shape[-2:]
    flat = heatmaps.flatten(2)  # (B, K, H*W)
    scores, index = flat.max(dim=2)
    x = _refine_axis(flat, index, 1, width, refine)
    y = _refine_axis(flat, index, width, height, refine)
    coords = torch.stack((x, y), dim=-1)
    return (coords, scores) if return_scores else coords

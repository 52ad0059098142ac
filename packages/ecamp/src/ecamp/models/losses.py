"""ECAMP's losses: masked-image MSE, windowed super-resolution MSE, re-weighted MLM cross-entropy, and the
segmentation loss of the downstream task (10 * focal - log Dice)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "dice_coefficient",
    "focal_loss",
    "masked_image_loss",
    "patch_mask_to_pixels",
    "segmentation_loss",
    "weighted_mlm_loss",
    "window_mask",
    "window_sr_loss",
]


def patch_mask_to_pixels(patch_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, L) per-patch values on a square grid -> (B, 1, g * p, g * p) per-pixel values."""
    b, length = patch_mask.shape
    grid = round(length**0.5)
    grid_mask = patch_mask.reshape(b, 1, grid, grid)
    return grid_mask.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def masked_image_loss(
    prediction: torch.Tensor, target: torch.Tensor, patch_mask: torch.Tensor, normalize: str = "all"
) -> torch.Tensor:
    """Squared error on the removed patches only.

    Args:
        prediction, target: (B, C, H, W) images (the decoder's output, unpatchified; the encoder input).
        patch_mask: (B, L) 1 = removed patch.
        normalize: "all" divides the masked squared error by every pixel (the reference code: at mask
            ratio .75 this is .75 x the masked-pixel MSE); "masked" by the masked pixels only (the paper's
            formula).
    """
    patch_size = target.shape[-1] // round(patch_mask.shape[1] ** 0.5)
    pixels = patch_mask_to_pixels(patch_mask, patch_size).to(target.dtype)  # (B, 1, H, W)
    squared = (prediction - target) ** 2 * pixels
    if normalize == "all":
        return squared.mean()
    if normalize == "masked":
        return squared.sum() / (pixels.sum() * target.shape[1]).clamp_min(1)
    raise ValueError(f"normalize must be 'all' or 'masked', got {normalize!r}")


def window_mask(top_left: torch.Tensor, window_cells: int, grid: int, cell_size: int) -> torch.Tensor:
    """(B, 2) window top-left (row, col) in cells -> (B, 1, grid * cell, grid * cell) 0/1 pixel mask."""
    rows = torch.arange(grid, device=top_left.device)
    inside_r = (rows[None] >= top_left[:, :1]) & (rows[None] < top_left[:, :1] + window_cells)  # (B, g)
    inside_c = (rows[None] >= top_left[:, 1:]) & (rows[None] < top_left[:, 1:] + window_cells)
    cells = (inside_r[:, :, None] & inside_c[:, None, :]).float()  # (B, g, g)
    return cells.repeat_interleave(cell_size, 1).repeat_interleave(cell_size, 2)[:, None]


def window_sr_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    top_left: torch.Tensor,
    window_cells: int,
    grid: int,
    normalize: str = "all",
) -> torch.Tensor:
    """Squared error of the super-resolved image inside a ``window_cells`` x ``window_cells`` cell window.

    Args:
        prediction, target: (B, C, S, S) super-resolved image and the high-resolution crop.
        top_left: (B, 2) window position (row, col) in cells of ``S / grid`` pixels.
        window_cells: window side in cells (ECAMP: 12 of 14 cells of 32 px = 384 px).
        grid: cells per side.
        normalize: "all" divides by every pixel of the image (the reference code), "window" by the window's.
    """
    pixels = window_mask(top_left, window_cells, grid, target.shape[-1] // grid).to(target.dtype)
    squared = (prediction - target) ** 2 * pixels
    if normalize == "all":
        return squared.mean()
    if normalize == "window":
        return squared.sum() / (pixels.sum() * target.shape[1]).clamp_min(1)
    raise ValueError(f"normalize must be 'all' or 'window', got {normalize!r}")


def weighted_mlm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    masked: torch.Tensor | None = None,
    positions: str = "all",
) -> torch.Tensor:
    """Re-weighted masked-language-model cross-entropy.

    Args:
        logits: (B, T, V).
        labels: (B, T) the original token ids.
        weights: (B, T) per-token weights (see ``ecamp.text.rebalanced_weights``).
        masked: (B, T) bool, True where the input token was replaced by [MASK] (needed for "masked").
        positions: "all": weighted cross-entropy over every position, padding and unmasked tokens included,
            averaged over B x T (the reference code); "masked": the weighted mean over the masked tokens only.
    """
    ce = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none").view_as(weights)
    if positions == "all":
        return (ce * weights).mean()
    if positions == "masked":
        if masked is None:
            raise ValueError("positions='masked' needs the masked flags")
        w = weights * masked.to(weights.dtype)
        return (ce * w).sum() / w.sum().clamp_min(1e-6)
    raise ValueError(f"positions must be 'all' or 'masked', got {positions!r}")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss without class balancing, averaged over pixels: mean(BCE * (1 - p_t) ** gamma)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_wrong = torch.sigmoid(-logits * (2 * target - 1))  # 1 - p_t
    return (bce * p_wrong**gamma).mean()


def dice_coefficient(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice of sigmoid(logits) and target over the whole batch: (2|PT| + s) / (|P| + |T| + s)."""
    p = torch.sigmoid(logits).flatten()
    t = target.flatten()
    return (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, focal_weight: float = 10.0) -> torch.Tensor:
    """ECAMP's segmentation loss ``focal_weight * focal - log(dice)``; (B, 1, H, W) logits, 0/1 targets."""
    return focal_weight * focal_loss(logits, target) - torch.log(dice_coefficient(logits, target))

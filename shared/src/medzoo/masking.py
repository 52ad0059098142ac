"""Masked-autoencoder pieces shared by the packages that pre-train a ViT with MAE (He et al. 2022).

- :func:`random_masking`: a per-sample random subset of patches to keep;
- :func:`masked_patch_loss`: MAE's loss, scored on the masked patches only.

Patch extraction stays in each package: it depends on the image dimensionality and the encoder's layout.
"""

from __future__ import annotations

import torch

__all__ = ["masked_patch_loss", "random_masking"]


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the patches with the smallest ``noise`` (B, N) values in each sample.

    By default the noise is uniform, drawn on the CPU from ``generator`` (the same draw on every device).

    Returns:
        keep (B, K) long indices of the visible patches in ascending order, K = round(N (1 - mask_ratio)) and
        at least 1; and mask (B, N) float, 1 = masked (hidden from the encoder), 0 = visible.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    keep_count = max(1, round(num_patches * (1.0 - mask_ratio)))
    if noise is None:
        noise = torch.rand(batch, num_patches, generator=generator)
    elif noise.shape != (batch, num_patches):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected ({batch}, {num_patches})")
    keep = noise.argsort(dim=1)[:, :keep_count].sort(dim=1).values.to(device)
    mask = torch.ones(batch, num_patches, device=device)
    mask.scatter_(1, keep, 0.0)
    return keep, mask


def masked_patch_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalize_target: bool = True
) -> torch.Tensor:
    """MAE's loss: the mean squared error of each patch, averaged over the masked patches only.

    Args:
        prediction, target: (B, N, P) reconstructed and true patch values.
        mask: (B, N), 1 = masked (scored), 0 = visible (ignored).
        normalize_target: normalise each target patch by its own mean and unbiased variance (eps 1e-6), as
            MAE's ``norm_pix_loss``.
    """
    if normalize_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (prediction - target).pow(2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)

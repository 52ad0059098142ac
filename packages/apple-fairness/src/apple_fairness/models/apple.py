"""APPLE's trainable parts: the latent perturber ``G_p`` and the attribute discriminator ``D_p``.

APPLE (Xu et al., "APPLE: Adversarial Privacy-aware Perturbations on Latent Embedding for Unfairness
Mitigation", MICCAI 2024) keeps a deployed segmentor ``D(E(x))`` frozen and learns ``G_p``, which maps the
encoder's latent ``z = E(x)`` to a bounded perturbation ``delta``; the decoder sees ``z' = z + delta``.
``D_p`` predicts the sensitive attribute from ``z'`` and is trained against ``G_p`` (FAAP, Wang et al.,
CVPR 2022, moved from the image to the latent space).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from apple_fairness.models.segmentors import Segmentor

__all__ = ["APPLE", "AttributeDiscriminator", "LatentPerturber"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm={kind!r}; expected 'batch', 'instance', 'group' or 'none'")


class LatentPerturber(nn.Module):
    """``G_p``: (B, C, h, w) latent -> (B, C, h, w) perturbation with ``|delta| <= bound`` everywhere.

    ``depth`` 3x3 conv + norm + LeakyReLU layers of ``hidden`` channels, then a 1x1 conv to ``C`` channels
    and ``delta = bound * tanh(.)`` (FAAP bounds its image perturbation by an L-inf budget; tanh keeps the
    bound differentiably). The last conv starts at zero, so training starts from the deployed model's
    behaviour (``delta = 0``).

    Args:
        channels: latent channels ``C``.
        hidden: channels of the hidden layers.
        depth: number of hidden 3x3 conv layers (>= 1).
        bound: L-inf bound of ``delta`` in latent units (> 0).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
    """

    def __init__(
        self, channels: int, hidden: int = 64, depth: int = 2, bound: float = 0.5, norm: str = "group"
    ) -> None:
        super().__init__()
        if bound <= 0 or depth < 1:
            raise ValueError(f"LatentPerturber: bound={bound}, depth={depth}; expected bound > 0, depth >= 1")
        # A buffer, so a checkpoint restores the bound it was trained with.
        self.register_buffer("bound", torch.tensor(float(bound)))
        layers: list[nn.Module] = []
        cin = channels
        for _ in range(depth):
            layers += [nn.Conv2d(cin, hidden, 3, padding=1), _norm(norm, hidden), nn.LeakyReLU(0.2)]
            cin = hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(hidden, channels, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.bound * torch.tanh(self.out(self.body(z)))


class AttributeDiscriminator(nn.Module):
    """``D_p``: (B, C, h, w) latent -> (B, num_groups) logits of the sensitive attribute.

    Strided 3x3 conv + norm + LeakyReLU layers, global average pooling and a two-layer MLP head.

    Args:
        channels: latent channels.
        num_groups: number of attribute values (classes).
        hidden: channels of the conv layers and the MLP.
        depth: number of conv layers; each halves the resolution while it is > 1.
        norm: as in :class:`LatentPerturber`.
    """

    def __init__(
        self, channels: int, num_groups: int = 2, hidden: int = 64, depth: int = 2, norm: str = "group"
    ) -> None:
        super().__init__()
        if num_groups < 2:
            raise ValueError(f"AttributeDiscriminator: num_groups={num_groups}; expected >= 2")
        self.num_groups, self.hidden, self.depth, self.norm = int(num_groups), int(hidden), int(depth), norm
        layers: list[nn.Module] = []
        cin = channels
        for _ in range(depth):
            layers += [nn.Conv2d(cin, hidden, 3, stride=2, padding=1), _norm(norm, hidden), nn.LeakyReLU(0.2)]
            cin = hidden
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cin, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, num_groups))

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.features(z).mean(dim=(2, 3)))


class APPLE(nn.Module):
    """A frozen segmentor with APPLE's perturber(s) and discriminator around its latent.

    ``forward(x)`` returns the perturbed segmentation logits; :meth:`perturb` exposes every step. The
    segmentor is frozen here (``requires_grad=False``) and kept in eval mode by :meth:`train`, so neither
    its weights nor its normalisation statistics can change.

    Args:
        segmentor: the deployed segmentor (a :class:`Segmentor`).
        num_groups: number of sensitive-attribute values.
        perturb_skips: also perturb the skip connections of a U-Net (one perturber per latent). The paper
            perturbs "the latent embedding"; default False = the bottleneck only.
        perturber_hidden, perturber_depth, perturber_norm: :class:`LatentPerturber` settings.
        delta_bound: L-inf bound of every perturbation.
        discriminator_hidden, discriminator_depth, discriminator_norm: :class:`AttributeDiscriminator`.
    """

    def __init__(
        self,
        segmentor: Segmentor,
        num_groups: int = 2,
        perturb_skips: bool = False,
        perturber_hidden: int = 64,
        perturber_depth: int = 2,
        perturber_norm: str = "group",
        delta_bound: float = 0.5,
        discriminator_hidden: int = 64,
        discriminator_depth: int = 2,
        discriminator_norm: str = "group",
    ) -> None:
        super().__init__()
        self.segmentor = segmentor.requires_grad_(False).eval()
        self.perturb_skips = bool(perturb_skips)
        channels = segmentor.latent_channels if perturb_skips else segmentor.latent_channels[-1:]
        self.perturbers = nn.ModuleList(
            LatentPerturber(c, perturber_hidden, perturber_depth, delta_bound, perturber_norm)
            for c in channels
        )
        self.discriminator = AttributeDiscriminator(
            segmentor.latent_channels[-1],
            num_groups,
            discriminator_hidden,
            discriminator_depth,
            discriminator_norm,
        )

    def train(self, mode: bool = True) -> APPLE:
        super().train(mode)
        self.segmentor.eval()  # frozen: batch-norm statistics must not move either
        return self

    def encode(self, x: Tensor) -> list[Tensor]:
        """The frozen encoder's latents ``z`` (no gradient flows into the segmentor)."""
        with torch.no_grad():
            return self.segmentor.encode(x)

    def perturb(self, latents: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """``z -> (z', deltas)`` with ``z' = z + G_p(z)`` on the bottleneck (and the skips if enabled).

        Returns:
            ``(perturbed latents, deltas)``; ``deltas[i]`` has the shape of the i-th perturbed latent
            (bottleneck last). Unperturbed skips are passed through unchanged.
        """
        targets = latents if self.perturb_skips else latents[-1:]
        deltas = [g(z) for g, z in zip(self.perturbers, targets, strict=True)]
        head = [] if self.perturb_skips else list(latents[:-1])
        return head + [z + d for z, d in zip(targets, deltas, strict=True)], deltas

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, num_classes, H, W) logits of the decoder on the perturbed latent."""
        perturbed, _ = self.perturb(self.encode(x))
        return self.segmentor.decode(perturbed)

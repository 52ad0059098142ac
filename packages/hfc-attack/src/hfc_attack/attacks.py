"""Gradient attacks on [0, 1] images, with the HFC term as an optional add-on loss.

Every attack takes a classifier whose normalisation is inside the model (inputs in [0, 1]) and a budget
``eps`` in pixel units (``eps_256 / 256`` for the paper's "eps = n/256"). The iterative family (FGSM, BIM,
PGD, MI-FGSM, DI, TI) shares one loop:

    g_t = grad_x L(x_t);  g_t <- smooth_TI(g_t) / mean|g_t|;  m_t = g_t + mu * m_{t-1}
    x_{t+1} = clip_[0,1](clip_{x_0 +- eps}(x_t + s * alpha * sign(m_t)))

with ``s = +1`` (ascend CE on the true label, untargeted) or ``s = -1`` (descend CE toward a target class,
then ``L = CE(f(x), t) + lambda * HFC(x, t)``). CW-L2 optimises in tanh space with Adam.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hfc_attack.models.features import FeatureExtractor
from hfc_attack.models.hfc import HFCLoss
from medzoo.errors import MedzooDataError

__all__ = [
    "ATTACKS",
    "CWL2",
    "IterativeAttack",
    "build_attack",
    "check_images",
    "gaussian_kernel",
    "other_class",
]


def check_images(images: torch.Tensor, where: str = "images") -> None:
    """Raise unless ``images`` is a floating (B, C, ...) tensor with every value in [0, 1]."""
    if not torch.is_floating_point(images) or images.dim() < 3:
        raise MedzooDataError(
            where, f"a {images.dtype} tensor of shape {tuple(images.shape)}", "float (B, C, ...)"
        )
    low, high = float(images.min()), float(images.max())
    if not (low >= 0.0 and high <= 1.0):
        raise MedzooDataError(
            where, f"values in [{low:.4g}, {high:.4g}]", "pixels in [0, 1] (normalise in the model)"
        )


def other_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The default target of a targeted attack: ``(y + 1) mod K`` (the other class of a binary task)."""
    return (labels + 1) % num_classes


def gaussian_kernel(size: int = 15, nsig: float = 3.0) -> torch.Tensor:
    """(size, size) Gaussian on ``linspace(-nsig, nsig, size)``, summing to 1 (TI-FGSM's kernel)."""
    x = np.linspace(-nsig, nsig, size)
    k1 = np.exp(-0.5 * x**2)
    kernel = np.outer(k1, k1)
    return torch.tensor(kernel / kernel.sum(), dtype=torch.float32)


class _AttackBase:
    def __init__(
        self,
        model: nn.Module,
        eps: float,
        targeted: bool,
        hfc: HFCLoss | None,
        hfc_weight: float,
        max_channels: int | None,
    ) -> None:
        if not eps > 0:
            raise MedzooDataError("eps", f"{eps}", "a positive budget (pixel units, e.g. 1/256)")
        if hfc is not None and not targeted:
            raise MedzooDataError(
                "hfc", "HFC with an untargeted attack", "targeted=True (HFC pulls toward a class)"
            )
        self.model = model
        self.eps = float(eps)
        self.targeted = targeted
        self.hfc = hfc
        self.hfc_weight = float(hfc_weight)
        self.extractor = FeatureExtractor(model, max_channels=max_channels) if hfc is not None else None

    def _targets(
        self, images: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        if target is not None:
            return target
        with torch.no_grad():
            num_classes = self.model(images[:1]).shape[1]
        return other_class(labels, num_classes)

    def _logits_and_hfc(
        self, x: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hfc is None:
            return self.model(x), x.new_zeros(())
        logits, features = self.extractor(x)
        return logits, self.hfc(features, target)


class IterativeAttack(_AttackBase):
    """FGSM / BIM / PGD / MI-FGSM / DI / TI as settings of one L-inf loop (see the module docstring).

    Args:
        model: classifier (B, C, H, W) in [0, 1] -> (B, K) logits, in eval mode.
        eps: L-inf budget in pixel units.
        alpha: step size (default ``eps / steps``).
        steps: iterations (1 with ``alpha = eps`` is FGSM).
        momentum: mu of MI-FGSM (0: BIM).
        random_start: PGD's start, uniform in the symmetric ball ``U(-eps, eps)``.
        diversity_prob: DI: probability of a random resize (to ``resize_rate``..1 of the size) and zero pad.
        resize_rate: DI's smallest resize factor.
        ti_kernel: TI: size of the Gaussian kernel smoothing the gradient (0: off).
        ti_nsig: TI: the kernel spans +-nsig standard deviations.
        targeted: descend CE toward ``target`` (default ``other_class(y)``) instead of ascending CE on ``y``.
        hfc: the HFC loss (needs ``targeted``); ``L = CE + hfc_weight * HFC``.
        hfc_weight: lambda.
        max_channels: layer filter of the feature hooks feeding ``hfc``.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        momentum: float = 0.0,
        random_start: bool = False,
        diversity_prob: float = 0.0,
        resize_rate: float = 0.9,
        ti_kernel: int = 0,
        ti_nsig: float = 3.0,
        targeted: bool = False,
        hfc: HFCLoss | None = None,
        hfc_weight: float = 1.0,
        max_channels: int | None = 512,
    ) -> None:
        super().__init__(model, eps, targeted, hfc, hfc_weight, max_channels)
        if steps < 1:
            raise MedzooDataError("steps", f"{steps}", "at least 1")
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else self.eps / self.steps
        if not self.alpha > 0:
            raise MedzooDataError("alpha", f"{alpha}", "a positive step size")
        self.momentum = float(momentum)
        self.random_start = random_start
        self.diversity_prob = float(diversity_prob)
        self.resize_rate = float(resize_rate)
        self.kernel = gaussian_kernel(ti_kernel, ti_nsig) if ti_kernel > 0 else None

    def input_diversity(self, x: torch.Tensor) -> torch.Tensor:
        """DI: with probability ``diversity_prob``, resize to a random smaller square and zero-pad back."""
        if self.diversity_prob <= 0 or torch.rand(1).item() >= self.diversity_prob:
            return x
        size = x.shape[-1]
        small = int(size * self.resize_rate)
        new = int(torch.randint(small, size, (1,)).item()) if small < size else size
        rescaled = F.interpolate(x, size=[new, new], mode="bilinear", align_corners=False)
        rem = size - new
        top = int(torch.randint(0, rem, (1,)).item()) if rem > 0 else 0
        left = int(torch.randint(0, rem, (1,)).item()) if rem > 0 else 0
        return F.pad(rescaled, [left, rem - left, top, rem - top], value=0.0)

    def _smooth(self, grad: torch.Tensor) -> torch.Tensor:
        if self.kernel is None:
            return grad
        c = grad.shape[1]
        weight = self.kernel.to(grad)[None, None].expand(c, 1, -1, -1)
        return F.conv2d(grad, weight, padding="same", groups=c)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Adversarial images (B, C, H, W) or volumes (B, C, D, H, W) in [0, 1], ``|x_adv - x|_inf <= eps``.

        Raises:
            MedzooDataError: DI or TI on inputs that are not (B, C, H, W) images (they are 2D only).
        """
        check_images(images)
        if (self.diversity_prob > 0 or self.kernel is not None) and images.dim() != 4:
            which = " and ".join(
                n for n, on in (("DI", self.diversity_prob > 0), ("TI", self.kernel is not None)) if on
            )
            raise MedzooDataError(
                "images",
                f"a batch of shape {tuple(images.shape)} for {which}",
                "(B, C, H, W) images: DI and TI are 2D only (use bim, pgd, mifgsm, fgsm or cw on volumes)",
            )
        images = images.detach()
        target = self._targets(images, labels, target) if self.targeted else None
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        velocity = torch.zeros_like(images)
        sign = -1.0 if self.targeted else 1.0
        for _ in range(self.steps):
            adv.requires_grad_(True)
            logits, hfc = self._logits_and_hfc(self.input_diversity(adv), target)
            loss = F.cross_entropy(logits, target if self.targeted else labels) + self.hfc_weight * hfc
            grad = torch.autograd.grad(loss, adv)[0]
            grad = self._smooth(grad)
            # Mean-L1 normalisation: sign() ignores it, momentum does not.
            grad = grad / grad.abs().mean(dim=tuple(range(1, grad.dim())), keepdim=True).clamp_min(1e-12)
            velocity = grad + self.momentum * velocity
            adv = adv.detach() + sign * self.alpha * velocity.sign()
            delta = (adv - images).clamp(-self.eps, self.eps)
            adv = (images + delta).clamp(0, 1).detach()
        return adv


class CWL2(_AttackBase):
    """Carlini-Wagner L2 in tanh space (Adam), keeping the smallest-L2 successful image per input.

    ``min ||x' - x||^2 + c * max(Z_y - max_{j != y} Z_j, -kappa)`` (untargeted; targeted uses
    ``max_{j != t} Z_j - Z_t``), plus ``hfc_weight * HFC`` per image when ``hfc`` is given. ``eps`` is an
    L-inf bound applied to the result (``None`` in the paper's CW: pass 1.0 for none).

    Args:
        model: classifier on [0, 1] inputs.
        eps: L-inf clip of the final perturbation (1.0 = unbounded).
        c: the constant c.
        kappa: confidence margin.
        steps: Adam iterations (the paper: 100).
        lr: Adam learning rate.
        targeted, hfc, hfc_weight, max_channels: as in :class:`IterativeAttack`.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 1.0,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        lr: float = 0.01,
        targeted: bool = False,
        hfc: HFCLoss | None = None,
        hfc_weight: float = 1.0,
        max_channels: int | None = 512,
    ) -> None:
        super().__init__(model, eps, targeted, hfc, hfc_weight, max_channels)
        self.c, self.kappa, self.steps, self.lr = float(c), float(kappa), int(steps), float(lr)

    def _margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(labels, logits.shape[1]).bool()
        own = logits[one_hot]
        other = logits.masked_fill(one_hot, float("-inf")).amax(dim=1)
        margin = other - own if self.targeted else own - other
        return margin.clamp(min=-self.kappa)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_images(images)
        images = images.detach()
        goal = self._targets(images, labels, target) if self.targeted else labels
        w = torch.atanh((images * 2 - 1).clamp(-1, 1)).detach().requires_grad_(True)
        best = images.clone()
        best_l2 = torch.full((images.shape[0],), 1e10, device=images.device)
        optimizer = torch.optim.Adam([w], lr=self.lr)
        previous = 1e10
        for step in range(self.steps):
            adv = 0.5 * (torch.tanh(w) + 1)
            l2 = (adv - images).pow(2).flatten(1).sum(1)
            if self.hfc is None:
                logits, hfc_term = self.model(adv), adv.new_zeros(())
            else:
                logits, features = self.extractor(adv)
                hfc_term = torch.stack([t.sum() for t in self.hfc.layer_terms(features, goal).values()]).sum()
            cost = l2.sum() + self.c * self._margin(logits, goal).sum() + self.hfc_weight * hfc_term
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()
            pred = logits.detach().argmax(1)
            success = (pred == goal) if self.targeted else (pred != labels)
            better = success & (best_l2 > l2.detach())
            best_l2 = torch.where(better, l2.detach(), best_l2)
            best = torch.where(better.view(-1, *[1] * (images.dim() - 1)), adv.detach(), best)
            # Stop when the cost stops decreasing (checked 10 times over the run).
            if step % max(self.steps // 10, 1) == 0:
                if cost.item() > previous:
                    break
                previous = cost.item()
        delta = (best - images).clamp(-self.eps, self.eps)
        return (images + delta).clamp(0, 1)


def _fgsm(model: nn.Module, eps: float, **kw: Any) -> IterativeAttack:
    return IterativeAttack(model, eps, alpha=eps, steps=1, **kw)


def _bim(
    model: nn.Module, eps: float, steps: int = 10, alpha: float | None = None, **kw: Any
) -> IterativeAttack:
    return IterativeAttack(model, eps, alpha=alpha if alpha is not None else eps / steps, steps=steps, **kw)


def _pgd(
    model: nn.Module, eps: float, steps: int = 10, alpha: float | None = None, **kw: Any
) -> IterativeAttack:
    # The paper's PGD: 10 steps of 2 eps / 10 from a random start.
    step = alpha if alpha is not None else 2 * eps / steps
    return IterativeAttack(model, eps, alpha=step, steps=steps, random_start=True, **kw)


def _mifgsm(
    model: nn.Module, eps: float, steps: int = 10, momentum: float = 0.5, **kw: Any
) -> IterativeAttack:
    # The reference's MI-FGSM uses momentum 0.5 (Dong et al. use 1.0).
    kw.setdefault("alpha", eps / steps)
    return IterativeAttack(model, eps, steps=steps, momentum=momentum, **kw)


def _di(
    model: nn.Module, eps: float, steps: int = 10, diversity_prob: float = 0.5, **kw: Any
) -> IterativeAttack:
    kw.setdefault("alpha", eps / steps)
    return IterativeAttack(model, eps, steps=steps, diversity_prob=diversity_prob, **kw)


def _ti(model: nn.Module, eps: float, steps: int = 10, ti_kernel: int = 15, **kw: Any) -> IterativeAttack:
    kw.setdefault("alpha", eps / steps)
    return IterativeAttack(model, eps, steps=steps, ti_kernel=ti_kernel, **kw)


# name -> factory(model, eps, **settings); `build_attack` looks names up here.
ATTACKS: dict[str, Callable[..., Any]] = {
    "fgsm": _fgsm,
    "bim": _bim,
    "pgd": _pgd,
    "mifgsm": _mifgsm,
    "di": _di,
    "ti": _ti,
    "cw": CWL2,
}


def build_attack(name: str, model: nn.Module, eps: float, **settings: Any) -> IterativeAttack | CWL2:
    """``ATTACKS[name](model, eps, **settings)`` with a clear error for an unknown name."""
    if name not in ATTACKS:
        raise MedzooDataError("attack", repr(name), f"one of {', '.join(ATTACKS)}")
    return ATTACKS[name](model, eps, **settings)

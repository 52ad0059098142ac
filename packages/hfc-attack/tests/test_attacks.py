from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from torch import nn

from hfc_attack import CWL2, FeatureExtractor, GaussianMixture, HFCLoss, build_attack, fit_class_gmms
from medzoo.errors import MedzooDataError

EPS = 4 / 256


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.tensor([0, 1, 0, 1])


def test_bim_equals_torchattacks(tiny_model, images, labels):
    ours = build_attack("bim", tiny_model, EPS, steps=5, alpha=EPS / 4)(images, labels)
    theirs = torchattacks.BIM(tiny_model, eps=EPS, alpha=EPS / 4, steps=5)(images, labels)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert (ours - images).abs().max() > EPS / 2  # it moved


def test_pgd_without_random_start_equals_torchattacks(tiny_model, images, labels):
    from hfc_attack import IterativeAttack

    ours = IterativeAttack(tiny_model, EPS, alpha=EPS / 5, steps=7)(images, labels)
    theirs = torchattacks.PGD(tiny_model, eps=EPS, alpha=EPS / 5, steps=7, random_start=False)(images, labels)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_targeted_bim_equals_torchattacks(tiny_model, images, labels):
    target = 1 - labels
    ours = build_attack("bim", tiny_model, EPS, steps=4, targeted=True)(images, labels, target)
    attack = torchattacks.BIM(tiny_model, eps=EPS, alpha=EPS / 4, steps=4)
    attack.set_mode_targeted_by_function(lambda x, y: 1 - y)
    torch.testing.assert_close(ours, attack(images, labels), atol=1e-6, rtol=0)


def test_mifgsm_equals_torchattacks(tiny_model, images, labels):
    ours = build_attack("mifgsm", tiny_model, EPS, steps=5, momentum=0.5)(images, labels)
    theirs = torchattacks.MIFGSM(tiny_model, eps=EPS, alpha=EPS / 5, steps=5, decay=0.5)(images, labels)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_ti_equals_torchattacks_without_diversity(tiny_model, images, labels):
    ours = build_attack("ti", tiny_model, EPS, steps=3, ti_kernel=7)(images, labels)
    theirs = torchattacks.TIFGSM(
        tiny_model, eps=EPS, alpha=EPS / 3, steps=3, len_kernel=7, diversity_prob=0.0, decay=0.0
    )(images, labels)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_di_with_the_same_random_stream_equals_torchattacks(tiny_model, images, labels):
    torch.manual_seed(3)
    ours = build_attack("di", tiny_model, EPS, steps=4, diversity_prob=0.5)(images, labels)
    torch.manual_seed(3)
    theirs = torchattacks.DIFGSM(tiny_model, eps=EPS, alpha=EPS / 4, steps=4, diversity_prob=0.5, decay=0.0)(
        images, labels
    )
    # Same draws in a different order would differ: compare statistically (same budget use, same effect).
    assert (ours - images).abs().max() <= EPS + 1e-6
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        assert abs(ce(tiny_model(ours), labels) - ce(tiny_model(theirs), labels)) < 0.1 * ce(
            tiny_model(theirs), labels
        )


def test_cw_equals_torchattacks(tiny_model, images, labels):
    # torchattacks' margin takes max((1 - onehot) * logits), right only for positive logits: shift them.
    shifted = nn.Sequential(tiny_model, _Shift(50.0)).eval()
    ours = CWL2(shifted, c=1.0, steps=20, lr=0.05)(images, labels)
    theirs = torchattacks.CW(shifted, c=1.0, kappa=0, steps=20, lr=0.05)(images, labels)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


class _Shift(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "mifgsm", "di", "ti"])
def test_linf_bound_and_range(tiny_model, name, labels):
    images = torch.rand(4, 3, 32, 32)
    images[:, :, :4] = 0.0  # pixels at the range limits must stay in [0, 1]
    images[:, :, -4:] = 1.0
    adv = build_attack(name, tiny_model, EPS)(images, labels)
    assert (adv - images).abs().max() <= EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - images).abs().max() > 0


def test_pgd_random_start_is_symmetric(images, labels):
    # A constant model: zero gradient, sign(0) = 0, so the output is the (clipped) random start itself.
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    nn.init.zeros_(model[1].weight)
    x = torch.full((64, 3, 32, 32), 0.5)
    adv = build_attack("pgd", model, EPS, steps=1)(x, torch.zeros(64, dtype=torch.long))
    delta = adv - x
    assert delta.min() < -0.9 * EPS and delta.max() > 0.9 * EPS
    assert abs(delta.mean()) < 0.01 * EPS


def test_bad_inputs(tiny_model, images, labels):
    with pytest.raises(MedzooDataError, match="eps"):
        build_attack("bim", tiny_model, 0.0)
    with pytest.raises(MedzooDataError, match="eps"):
        build_attack("pgd", tiny_model, -1 / 256)
    with pytest.raises(MedzooDataError, match=r"\[0, 1\]"):
        build_attack("bim", tiny_model, EPS)(images * 2, labels)
    with pytest.raises(MedzooDataError, match=r"\[0, 1\]"):
        build_attack("fgsm", tiny_model, EPS)(images - 0.5, labels)
    with pytest.raises(MedzooDataError, match="one of"):
        build_attack("deepfool", tiny_model, EPS)
    with pytest.raises(MedzooDataError, match="ReLU"):
        FeatureExtractor(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh()))


def test_feature_hooks_pool_every_relu_and_filter_channels(tiny_model, images):
    extractor = FeatureExtractor(tiny_model, max_channels=None)
    logits, feats = extractor(images)
    torch.testing.assert_close(logits, tiny_model(images))
    relus = [n for n, m in tiny_model.named_modules() if isinstance(m, nn.ReLU)]
    assert [k.split("#")[0] for k in feats] and set(k.split("#")[0] for k in feats) == set(relus)
    # The stem ReLU's pooled feature equals pooling its output computed by hand.
    net = tiny_model.net
    stem = net.act1(net.bn1(net.conv1((images - tiny_model.mean) / tiny_model.std)))
    torch.testing.assert_close(feats["net.act1"], stem.mean((2, 3)))
    small = FeatureExtractor(tiny_model, max_channels=32)(images)[1]
    assert set(small) < set(feats) and all(v.shape[1] <= 32 for v in small.values())


def test_torchvision_style_reused_relu_gives_one_feature_per_call(images):
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 5, 3), relu, nn.Flatten(), nn.LazyLinear(2))
    model(images)
    _, feats = FeatureExtractor(model)(images)
    assert list(feats) == ["1", "1#1"] and feats["1"].shape == (4, 4) and feats["1#1"].shape == (4, 5)


def test_hfc_loss_known_answer_one_gaussian():
    # One component, mean (1, 2), precision Cholesky diag(2, 0.5): whitened (f - mu) L = (2 * 2, 0.5 * -4).
    gmm = GaussianMixture(
        torch.ones(1), torch.tensor([[1.0, 2.0]]), torch.diag(torch.tensor([2.0, 0.5]))[None]
    )
    loss = HFCLoss({"layer": {0: gmm}})
    f = torch.tensor([[3.0, -2.0]])
    expected = ((2.0 * 2.0) ** 2 + (0.5 * -4.0) ** 2) / 2  # mean over the 2 feature dims = 10
    assert loss({"layer": f}, torch.tensor([0])).item() == pytest.approx(expected)
    # Gradient: d/df mean(((f - mu) L)^2) = 2 (f - mu) L L^T / D.
    f.requires_grad_(True)
    loss({"layer": f}, torch.tensor([0])).backward()
    torch.testing.assert_close(f.grad, torch.tensor([[2 * 2.0 * 4 / 2, 2 * -4.0 * 0.25 / 2]]))


def test_hfc_towards_a_class_without_a_mixture_is_a_clear_error():
    means, chol = torch.zeros(1, 2), torch.eye(2)[None].clone()
    loss = HFCLoss({"l": {0: GaussianMixture(torch.tensor([1.0]), means, chol)}})
    with pytest.raises(MedzooDataError, match=r"mixtures for classes \['0'\] only.*class 1"):
        loss.layer_terms({"l": torch.zeros(1, 2)}, torch.tensor([1]))


def test_hfc_picks_the_most_likely_component():
    means = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    chol = torch.eye(2).expand(2, 2, 2).clone()
    loss = HFCLoss({"l": {0: GaussianMixture(torch.tensor([0.5, 0.5]), means, chol)}})
    f = torch.tensor([[9.0, 10.0], [1.0, 0.0]])
    terms = loss.layer_terms({"l": f}, torch.tensor([0, 0]))["l"]
    torch.testing.assert_close(terms, torch.tensor([0.5, 0.5]))  # distance to the nearer mean, not the other


def test_gmm_log_prob_equals_sklearn_and_npz_round_trip(tmp_path):
    from sklearn.mixture import GaussianMixture as SkGMM

    rng = np.random.default_rng(0)
    feats = {"a": rng.normal(size=(60, 3)), "b": rng.normal(size=(60, 2)) + 3}
    labels = np.repeat([0, 1], 30)
    gmms = fit_class_gmms(feats, labels, n_components=3, n_init=1, max_iter=200)
    path = gmms.save(tmp_path / "gmm.npz")
    loaded = type(gmms).load(path)
    loss = loaded.hfc_loss()
    p = loaded.params["a"][1]
    sk = SkGMM(n_components=3, covariance_type="full")
    sk.weights_, sk.means_, sk.precisions_cholesky_ = p["weights"], p["means"], p["precisions_cholesky"]
    x = rng.normal(size=(5, 3))
    ours = loss.mixture("a", 1).log_prob(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(ours.numpy(), sk.score_samples(x), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(loaded.params["b"][0]["means"], gmms.params["b"][0]["means"])
    assert np.load(path, allow_pickle=False)  # readable without pickle


def test_hfc_raises_gmm_likelihood_over_bim(tiny_model):
    torch.manual_seed(0)
    x = torch.rand(24, 3, 32, 32)
    extractor = FeatureExtractor(tiny_model, max_channels=64)
    with torch.no_grad():
        logits, feats = extractor(x)
    pred = logits.argmax(1)
    classes = torch.arange(24) % 2  # both classes' mixtures exist; fit on the clean features
    gmms = fit_class_gmms({k: v.numpy() for k, v in feats.items()}, classes.numpy(), n_components=2, n_init=1)
    hfc = gmms.hfc_loss()
    target = 1 - pred
    eps, steps = 2 / 256, 20
    plain = build_attack("bim", tiny_model, eps, steps=steps, targeted=True)(x, pred, target)
    with_hfc = build_attack("bim", tiny_model, eps, steps=steps, targeted=True, hfc=hfc, max_channels=64)(
        x, pred, target
    )
    with torch.no_grad():
        ll_plain = hfc.log_likelihood(extractor(plain)[1], target)
        ll_hfc = hfc.log_likelihood(extractor(with_hfc)[1], target)
    for layer in hfc.layer_names:
        assert ll_hfc[layer].mean() > ll_plain[layer].mean(), layer


def test_volumes_work_with_hooks_attacks_and_hfc():
    # (B, C, D, H, W): the loop, the projection and the feature pooling are dimension-agnostic.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 2),
    ).eval()  # fmt: skip
    x, y = torch.rand(6, 1, 8, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    _, feats = FeatureExtractor(model)(x)
    assert {k: v.shape for k, v in feats.items()} == {"1": (6, 4), "3": (6, 6)}
    gmms = fit_class_gmms(
        {k: v.detach().numpy() for k, v in feats.items()}, y.numpy(), n_components=2, n_init=1
    )
    for name in ("bim", "pgd", "mifgsm"):
        adv = build_attack(name, model, EPS, targeted=True, hfc=gmms.hfc_loss())(x, y)
        assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    theirs = torchattacks.BIM(model, eps=EPS, alpha=EPS / 10, steps=10)(x, y)
    torch.testing.assert_close(build_attack("bim", model, EPS)(x, y), theirs, atol=1e-6, rtol=0)

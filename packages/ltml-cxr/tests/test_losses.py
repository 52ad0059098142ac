"""Known answers for the six losses on a hand-computed 2x3 case; parity with a scalar re-implementation."""

from __future__ import annotations

import math

import pytest
import torch

from ltml_cxr.models import LOSS_NAMES, ResampleLoss, build_loss, num_reconsidered
from medzoo.errors import MedzooDataError

COUNTS, N = [50.0, 10.0, 2.0], 100
LOGITS = [[0.0, 1.0, -1.0], [2.0, -0.5, 0.0]]
TARGETS = [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]  # row 1 has no positive (no "No Finding" class in LTML)


def make(name: str, **overrides) -> ResampleLoss:
    loss = build_loss(name, 3, **overrides).double()
    loss.set_class_counts(COUNTS, N)
    return loss


def tensors():
    return torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(TARGETS, dtype=torch.float64)


# ---------------------------------------------------------------------------------------- hand-computed parts


def test_prior_bias_known_answer():
    # b_c = -log(N/n_c - 1) * 0.05 / 2: n = 50 -> -log(1) = 0; n = 10 -> -log(9)/40; n = 2 -> -log(49)/40.
    expected = [0.0, -0.0549306144, -0.0972955075]
    assert make("db").logit_bias().tolist() == pytest.approx(expected, abs=1e-9)
    assert make("focal").logit_bias().tolist() == [0.0, 0.0, 0.0]


def test_rebalance_weights_known_answer():
    # Row 0 (positives 0 and 2): sum 1/n = 0.02 + 0.5 = 0.52; r = (0.02, 0.1, 0.5) / 0.52
    # w = sigmoid(10 (r - 0.2)) + 0.1 = sigmoid(-1.6154) + .1, sigmoid(-0.0769) + .1, sigmoid(7.6154) + .1.
    # Row 1 has no positive: r = inf, w = 1 + 0.1.
    weights = make("db").rebalance_weights(tensors()[1])
    expected = [[0.2658424, 0.5807786, 1.0995078], [1.1, 1.1, 1.1]]
    assert weights.tolist()[0] == pytest.approx(expected[0], abs=1e-6)
    assert weights.tolist()[1] == pytest.approx(expected[1], abs=1e-12)
    assert torch.isfinite(weights).all()


def test_anr_lambda_known_answer():
    # lambda = 10 (1 - sigmoid(z)) + 1 from the RAW logit: z = 0 -> 6, 1 -> 3.6894, -1 -> 8.3106, 2 -> 2.1920.
    lam = make("anr").anr_lambda(tensors()[0])
    expected = [[6.0, 3.6894142, 8.3105858], [2.1920292, 7.2245933, 6.0]]
    for got, want in zip(lam.tolist(), expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)


def test_ce_known_answer():
    # mean of softplus(+-z): log 2, softplus(1), softplus(1), softplus(2), softplus(-0.5), log 2.
    entries = [math.log(2), math.log1p(math.e), math.log1p(math.e), math.log1p(math.e**2),
               math.log1p(math.exp(-0.5)), math.log(2)]  # fmt: skip
    assert make("ce")(*tensors()).item() == pytest.approx(sum(entries) / 6, abs=1e-12)
    assert sum(entries) / 6 == pytest.approx(1.1023038, abs=1e-6)


def test_anr_negative_entry_known_answer():
    # Entry (0, 1): y = 0, z = 1, b = -log(9)/40, lambda = 3.6894142, w = 0.5807786 / lambda.
    # z' = (1 + b) * lambda = 3.4867516; BCE = softplus(z') = 3.5168; focal 2 * sigmoid(z')^2.
    matrix = make("anr").loss_matrix(*tensors())
    z_adj = (1 - math.log(9) / 40) * 3.6894142
    bce = math.log1p(math.exp(z_adj))
    p = 1 / (1 + math.exp(-z_adj))
    expected = 2 * p**2 * (0.5807786 / 3.6894142) * bce
    assert matrix[0, 1].item() == pytest.approx(expected, rel=1e-6)


def test_db_negative_entry_is_scaled_by_neg_scale():
    # DB entry (1, 0): y = 0, z = 2, b = 0 -> z' = 2 * 2 = 4, w = 1.1 / 2.
    matrix = make("db").loss_matrix(*tensors())
    bce = math.log1p(math.exp(4.0))
    expected = 2 * (1 / (1 + math.exp(-4.0))) ** 2 * 0.55 * bce
    assert matrix[1, 0].item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("entries", "epoch", "k"),
    [(6, 0, 0), (6, 1, 1), (6, 2, 2), (6, 3, 2), (20, 3, 6), (6, 10, 6), (6, 12, 6)],
)
def test_number_reconsidered(entries, epoch, k):
    assert num_reconsidered(entries, epoch) == k


def test_number_reconsidered_reference_rounding():
    # 20 * (1 - (1 - 0.3)) = 6.000000000000001 in floating point -> 7 in the reference.
    assert num_reconsidered(20, 3, reference_rounding=True) == 7
    assert num_reconsidered(6, 2, reference_rounding=True) == 2


# ------------------------------------------------------------------------------- LLA / LLM at epochs 0, 1, 2


def test_lla_thresholds_at_epochs_0_1_2():
    loss = make("anr_lla")
    logits, targets = tensors()
    matrix = loss.loss_matrix(logits, targets)
    negatives = [(0, 1), (1, 0), (1, 1), (1, 2)]
    by_size = sorted(negatives, key=lambda rc: -matrix[rc].item())
    # Hand check of the order: the largest negative loss is z = 2 at (1, 0), then z = 1 at (0, 1).
    assert by_size[:2] == [(1, 0), (0, 1)]
    assert loss(logits, targets, epoch=0).item() == pytest.approx(matrix.mean().item(), rel=1e-12)
    for epoch, k in ((1, 1), (2, 2)):
        kept = matrix.clone()
        for rc in by_size[:k]:
            kept[rc] = 0.0
        assert loss(logits, targets, epoch=epoch).item() == pytest.approx(kept.mean().item(), rel=1e-12)


def test_llm_flips_exactly_the_top_k_negative_losses():
    loss = make("anr_llm")
    logits, targets = tensors()
    matrix = loss.loss_matrix(logits, targets)
    flipped = loss.loss_matrix(logits, 1 - targets)
    for epoch, chosen in ((1, [(1, 0)]), (2, [(1, 0), (0, 1)])):
        mask = loss.reconsider_mask(matrix, targets, epoch)
        assert sorted(map(tuple, mask.nonzero().tolist())) == sorted(chosen)
        expected = matrix.clone()
        for rc in chosen:
            expected[rc] = flipped[rc]
        assert loss(logits, targets, epoch=epoch).item() == pytest.approx(expected.mean().item(), rel=1e-12)
    assert not loss.reconsider_mask(matrix, targets, 0).any()


def test_reconsideration_never_touches_positives_unless_reference_quirks():
    # One negative entry only: at epoch 2, k = 2 exceeds it. The reference's threshold becomes 0 and every
    # entry (positives included) is zeroed; our default zeroes only the one negative.
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    targets = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    ours, quirky = make("anr_lla"), make("anr_lla", reference_quirks=True)
    matrix = ours.loss_matrix(logits, targets)
    expected = matrix.clone()
    expected[1, 2] = 0
    assert ours(logits, targets, epoch=2).item() == pytest.approx(expected.mean().item(), rel=1e-12)
    assert quirky(logits, targets, epoch=2).item() == 0.0


def test_anr_leaves_positives_unchanged():
    logits, targets = tensors()
    logits = logits.clone().requires_grad_(True)
    anr, db = make("anr"), make("db")
    positive = targets > 0
    a, d = anr.loss_matrix(logits, targets), db.loss_matrix(logits, targets)
    torch.testing.assert_close(a[positive], d[positive], rtol=0, atol=0)
    assert not torch.allclose(a[~positive], d[~positive])
    (grad_a,) = torch.autograd.grad(a[positive].sum(), logits)
    (grad_d,) = torch.autograd.grad(d[positive].sum(), logits)
    torch.testing.assert_close(grad_a, grad_d)


# ------------------------------------------------------------- parity with a scalar re-implementation


def scalar_entry(z, y, row, config, bias_shift=0.0):
    """One entry of the reference's loss, written out with Python scalars (torch for autograd)."""
    inv = [1.0 / n for n in COUNTS]
    bias = [-math.log(N / n - 1) * 0.05 / 2 for n in COUNTS] if config["prior_bias"] else [0.0] * 3
    c = row["c"]
    weight = 1.0
    if config["rebalance"]:
        repeat = sum(i for i, t in zip(inv, row["y"], strict=True) if t > 0)
        weight = 1.1 if repeat == 0 else 1 / (1 + math.exp(-10 * (inv[c] / repeat - 0.2))) + 0.1
    raw = z + bias_shift * bias[c]
    adjusted = raw + bias[c]
    if y == 0 and config["negatives"] == "scaled":
        adjusted, weight = adjusted * 2, weight / 2
    elif y == 0 and config["negatives"] == "adaptive":
        lam = 10 * (1 - torch.sigmoid(raw)) + 1
        adjusted, weight = adjusted * lam, weight / lam.detach()
    log_p = torch.nn.functional.logsigmoid(adjusted if y == 1 else -adjusted)
    loss = -weight * log_p
    if config["focal"]:
        loss = 2 * (1 - torch.exp(log_p)) ** 2 * loss
    return loss


def scalar_loss(logits, targets, name, epoch, quirks=False):
    from ltml_cxr.models import LOSS_CONFIGS

    config = {"large_loss": None, "negatives": "plain", **LOSS_CONFIGS[name]}
    rows = len(targets)
    entries, flipped = {}, {}
    for r in range(rows):
        for c in range(3):
            y = targets[r][c]
            entries[r, c] = scalar_entry(logits[r, c], y, {"c": c, "y": targets[r]}, config)
            flip_row = [1 - t for t in targets[r]]
            shift = 1.0 if quirks and config["prior_bias"] else 0.0
            flipped[r, c] = scalar_entry(logits[r, c], 1 - y, {"c": c, "y": flip_row}, config, shift)
    total = dict(entries)
    if config["large_loss"] and epoch >= 1:
        k = math.ceil(0.1 * epoch * rows * 3 - 1e-9)
        negatives = sorted(
            (rc for rc in entries if targets[rc[0]][rc[1]] == 0), key=lambda rc: -entries[rc].item()
        )
        for rc in negatives[:k]:
            total[rc] = torch.zeros(()) if config["large_loss"] == "abandon" else flipped[rc]
    return sum(total.values()) / len(total)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_parity_with_scalar_reimplementation(name, epoch):
    torch.manual_seed(epoch)
    logits = (torch.randn(4, 3, dtype=torch.float64) * 2).requires_grad_(True)
    targets = [[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1]]
    ours = make(name)(logits, torch.tensor(targets, dtype=torch.float64), epoch=epoch)
    theirs = scalar_loss(logits, targets, name, epoch)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(grad_ours, grad_theirs)  # lambda's gradient flows as in the reference


def test_reference_quirk_double_bias_in_flipped_pass():
    logits = torch.tensor([[2.0, 1.5, -1.0], [0.3, -0.2, 3.0]], dtype=torch.float64)
    targets = [[1, 0, 0], [0, 1, 0]]
    quirky = make("anr_llm", reference_quirks=True)(logits, torch.tensor(targets, dtype=torch.float64), 2)
    expected = scalar_loss(logits, targets, "anr_llm", 2, quirks=True)
    assert quirky.item() == pytest.approx(expected.item(), rel=1e-10)
    plain = make("anr_llm")(logits, torch.tensor(targets, dtype=torch.float64), 2)
    assert plain.item() != pytest.approx(quirky.item(), rel=1e-6)


def test_uncertain_labels_count_as_negatives_and_bad_inputs():
    loss = make("db")
    logits, targets = tensors()
    uncertain = targets.clone()
    uncertain[1, 1] = -1
    assert loss(logits, uncertain).item() == loss(logits, targets).item()
    with pytest.raises(ValueError, match=r"expected both \(B, 3\)"):
        loss(logits[:, :2], targets[:, :2])
    with pytest.raises(MedzooDataError, match="one of ce, focal"):
        build_loss("bce", 3)
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        loss.set_class_counts([1, 2], 10)


def test_class_counts_are_clipped_to_finite_priors():
    loss = build_loss("db", 3)
    loss.set_class_counts([0, 5, 10], 10)
    assert torch.isfinite(loss.logit_bias()).all()
    assert loss.class_counts.tolist() == [1.0, 5.0, 9.0]

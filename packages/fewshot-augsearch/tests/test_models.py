"""ALPNet: prototype pooling on planted masks, the similarity fusion, overfitting, save/load."""

import pytest
import torch
import torch.nn.functional as F

from fewshot_augsearch.models import ALPNet, create_model, local_prototype_scores, masked_average_prototype
from medzoo.errors import MedzooDataError
from medzoo.weights import load_weights


def test_masked_average_prototype_known_answer():
    features = torch.arange(16.0).view(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, :2] = 1  # values 0 and 1
    assert masked_average_prototype(features, mask).item() == pytest.approx(0.5, abs=1e-4)


def test_local_pooling_keeps_only_windows_above_the_threshold():
    torch.manual_seed(1)
    support = torch.randn(1, 6, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1  # window (0, 0) fully inside: a prototype
    mask[..., 0:2, 2] = 1  # window (0, 1) three quarters inside: 0.75 < 0.95, not a prototype
    mask[..., 0, 3] = 1
    query = torch.randn(2, 6, 3, 5)
    scores = local_prototype_scores(query, support, mask, window=2, use_global=False)
    prototype = support[0, :, :2, :2].mean(dim=(-1, -2))
    expected = 20 * F.cosine_similarity(query, prototype[None, :, None, None], dim=1)[:, None]
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)  # one prototype: softmax weight 1


def test_two_prototypes_fuse_by_a_softmax_weighted_sum():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    support = torch.zeros(1, 2, 2, 4)
    support[0, :, :, :2] = a[:, None, None]  # columns 0-1 hold a, columns 2-3 hold b; the mask covers
    support[0, :, :, 2:] = b[:, None, None]  # everything -> 2 local prototypes a, b
    mask = torch.ones(1, 1, 2, 4)
    query = torch.tensor([0.6, 0.8]).view(1, 2, 1, 1)
    score = local_prototype_scores(query, support, mask, window=2, use_global=False).item()
    sims = torch.tensor([20 * 0.6, 20 * 0.8])
    assert score == pytest.approx(float((sims.softmax(0) * sims).sum()), rel=1e-5)
    # with the global prototype (a + b) / 2 added as a third one
    with_global = local_prototype_scores(query, support, mask, window=2, use_global=True).item()
    sims3 = torch.tensor([12.0, 16.0, 20 * (0.6 + 0.8) / 2**0.5])
    assert with_global == pytest.approx(float((sims3.softmax(0) * sims3).sum()), rel=1e-5)


def test_without_local_prototypes_the_global_one_is_used():
    support = torch.randn(1, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1  # a quarter of one window: no local prototype
    query = torch.randn(1, 4, 4, 4)
    scores = local_prototype_scores(query, support, mask, window=2, use_global=False)
    expected = 20 * F.cosine_similarity(query, support[:, :, :1, :1], dim=1)[:, None]
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


def test_encoder_is_at_one_eighth():
    model = create_model("tiny")
    assert model.forward_features(torch.rand(2, 1, 64, 64)).shape == (2, 64, 8, 8)


def _episode():
    image = torch.zeros(1, 1, 64, 64)
    image[..., 16:40, 20:44] = 1.0
    image = image + 0.05 * torch.randn_like(image)
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.long)
    mask[..., 16:40, 20:44] = 1
    return image, mask


def test_overfitting_one_episode_drives_the_loss_down():
    model = create_model("tiny").train()
    image, mask = _episode()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    weight = torch.tensor([0.05, 1.0])
    losses = []
    for _ in range(15):
        out = model(image, mask, image, align=True)
        loss = F.cross_entropy(out.logits, mask[:, 0], weight=weight) + out.align_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_save_load_gives_identical_outputs(tmp_path):
    from fewshot_augsearch.module import FewShotSegmentationModule

    module = FewShotSegmentationModule("tiny").eval()
    path = module.export_weights(tmp_path / "alpnet.safetensors")
    other = FewShotSegmentationModule("tiny").eval()
    other.load_state_dict(load_weights(path))
    image, mask = _episode()
    with torch.no_grad():
        torch.testing.assert_close(
            module.model(image, mask, image).logits, other.model(image, mask, image).logits
        )


def test_bad_variant_and_override_name_the_choices():
    with pytest.raises(MedzooDataError, match="paper"):
        create_model("huge")
    with pytest.raises(MedzooDataError, match="unknown settings"):
        create_model("tiny", depth=3)
    assert isinstance(create_model("tiny", test_window=2), ALPNet)

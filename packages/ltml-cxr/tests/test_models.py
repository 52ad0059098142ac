"""The classifier: architecture, local pretrained weights, save/load identity, overfitting a tiny batch."""

from __future__ import annotations

import pytest
import torch

from ltml_cxr import MODEL_CONFIGS, create_model
from ltml_cxr.models import LTMLClassifier, PFCNeck, build_loss
from medzoo.errors import MedzooDataError, MedzooWeightsError
from medzoo.weights import load_weights, save_weights


def test_paper_model_is_resnet50_with_pfc_neck():
    model = create_model("paper")
    assert model.num_features == 2048
    assert (model.neck.fc.in_features, model.neck.fc.out_features) == (2048, 256)
    assert isinstance(model.neck.bn, torch.nn.BatchNorm1d) and model.neck.drop.p == 0.5
    assert (model.head.in_features, model.head.out_features) == (256, 39)
    # ResNet-50 body (23.5 M) + 2048*256+256 + BN 512 + 256*39+39.
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert backbone == 23_508_032
    assert sum(p.numel() for p in model.parameters()) == backbone + 524_544 + 512 + 10_023


def test_neck_is_gap_fc_bn_without_relu():
    neck = PFCNeck(4, 3, dropout=0.0).eval()
    torch.nn.init.constant_(neck.fc.bias, -5.0)  # FC outputs well below 0: a ReLU would zero them
    features = torch.rand(2, 4, 5, 5)
    expected = neck.bn(neck.fc(features.mean(dim=(2, 3))))
    torch.testing.assert_close(neck(features), expected)
    assert (neck(features) < 0).any()  # no ReLU after the BN, as in the reference


def test_classifier_init_follows_reference():
    model = create_model("tiny")
    assert model.head.bias.abs().max() == 0
    assert 0.005 < model.head.weight.std().item() < 0.015  # N(0, 0.01)


def test_bad_variant_and_override_name_the_choices():
    with pytest.raises(MedzooDataError, match="paper"):
        create_model("huge")
    with pytest.raises(MedzooDataError, match="unknown settings"):
        create_model("tiny", depth=3)
    assert set(MODEL_CONFIGS) >= {"paper", "tiny"}


def test_local_pretrained_backbone_weights_are_loaded(tmp_path):
    source = create_model("tiny")
    path = save_weights(source.backbone, tmp_path / "backbone.safetensors")
    target = create_model("tiny", pretrained=str(path))
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(target.backbone.state_dict()[key], value)
    with pytest.raises(MedzooWeightsError, match="no such weights file"):
        create_model("tiny", pretrained=str(tmp_path / "missing.safetensors"))
    save_weights({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(MedzooWeightsError, match="do not match"):
        create_model("tiny", pretrained=str(tmp_path / "bad.safetensors"))


def test_save_load_identity(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=5).eval()
    images = torch.randn(3, 3, 64, 64)
    path = save_weights(model, tmp_path / "model.safetensors")
    restored = create_model("tiny", num_classes=5).eval()
    restored.load_state_dict(load_weights(path))
    torch.testing.assert_close(restored(images), model(images), rtol=0, atol=0)


@pytest.mark.parametrize("loss_name", ["ce", "anr_llm"])
def test_overfits_a_tiny_batch(loss_name):
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=4, dropout=0.0)
    images = torch.randn(8, 3, 32, 32)
    targets = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]] * 2, dtype=torch.float32)
    criterion = build_loss(loss_name, 4)
    criterion.set_class_counts(targets.sum(0), 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = criterion(model(images), targets, epoch=0)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert criterion(logits, targets).item() < 0.1 * first
    assert torch.equal((logits > 0).float(), targets)


def test_classifier_is_a_plain_module():
    assert isinstance(create_model("tiny"), LTMLClassifier)
    assert not any("lightning" in type(m).__module__ for m in create_model("tiny").modules())

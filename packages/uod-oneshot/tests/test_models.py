"""Domain-specific vs shared parameters, and isolation of domains during training."""

from __future__ import annotations

import pytest
import torch

from uod_oneshot import create_model, create_ssl_model


@pytest.fixture(params=["ssl", "datr"])
def net(request):
    torch.manual_seed(0)
    return create_ssl_model("tiny") if request.param == "ssl" else create_model("tiny")


def test_domain_specific_parameters_differ_and_shared_ones_are_one_tensor(net):
    a, b = net.domain_specific_parameters(0), net.domain_specific_parameters(1)
    assert a and b and not set(a) & set(b)

    # each domain's copy is its own tensor (not the same storage) with the same shapes
    def shapes(params):  # the heads differ by design: one output per landmark of the domain
        return sorted(tuple(p.shape) for n, p in params.items() if not n.startswith("heads."))

    assert shapes(a) == shapes(b)
    assert not {p.data_ptr() for p in a.values()} & {p.data_ptr() for p in b.values()}
    specific = set(a) | set(b)
    shared = [n for n, _ in net.named_parameters() if n not in specific]
    assert shared  # e.g. the pointwise convs, K/V projections
    if hasattr(net, "encoder"):  # DATR: K and V are shared, Q per domain
        assert any(".attn.k." in n for n in shared) and any(".attn.q.0." in n for n in a)
    else:
        assert any("pointwise1" in n for n in shared) and any("depthwise1.0" in n for n in a)


def test_a_step_on_domain_a_leaves_domain_b_specific_parameters_unchanged(net):
    net.train()
    before_b = {n: p.detach().clone() for n, p in net.domain_specific_parameters(1).items()}
    before_a = {n: p.detach().clone() for n, p in net.domain_specific_parameters(0).items()}
    shared_before = {
        n: p.detach().clone() for n, p in net.named_parameters() if "pointwise1" in n or ".k." in n
    }
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    out = net(torch.randn(2, 3, 64, 64), 0)
    loss = sum(o.square().mean() for o in out) if isinstance(out, list) else out.square().mean()
    loss.backward()
    optimizer.step()
    for name, value in net.domain_specific_parameters(1).items():
        assert torch.equal(value, before_b[name]), name
    assert any(not torch.equal(p, before_a[n]) for n, p in net.domain_specific_parameters(0).items())
    params = dict(net.named_parameters())
    assert any(not torch.equal(params[n], v) for n, v in shared_before.items())


def test_bad_domain_index_is_a_clear_error():
    with pytest.raises(IndexError, match="domain index 2 out of range"):
        create_model("tiny")(torch.randn(1, 3, 32, 32), 2)


def test_datr_heads_have_each_domains_landmark_count_and_output_in_unit_interval():
    net = create_model("tiny", num_landmarks=(3, 5)).eval()
    with torch.no_grad():
        a, b = net(torch.randn(1, 1, 64, 64), 0), net(torch.randn(1, 1, 64, 64), 1)
    assert a.shape == (1, 3, 64, 64) and b.shape == (1, 5, 64, 64)
    assert float(a.min()) >= 0 and float(a.max()) <= 1  # a sigmoid (float32 saturates at 1)


def test_ssl_net_levels_have_the_documented_strides():
    net = create_ssl_model("tiny").eval()
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 64, 64), 1)
    assert [m.shape[-1] for m in maps] == [64 // s for s in (32, 16, 8, 4, 2, 1)]
    assert all(m.shape[1] == 16 for m in maps)


def test_bad_variant_and_override_name_the_choices():
    from medzoo.errors import MedzooDataError

    with pytest.raises(MedzooDataError, match="paper"):
        create_model("huge")
    with pytest.raises(MedzooDataError, match="unknown settings"):
        create_model("tiny", depth=3)


def test_self_training_trains_on_the_previous_epochs_own_predictions(monkeypatch):
    from types import SimpleNamespace

    from uod_oneshot.decoding import decode_largest_component
    from uod_oneshot.module import DATRModule

    torch.manual_seed(0)
    module = DATRModule(num_landmarks=[2], variant="tiny", sigma=3.0, self_training=0.5)
    trainer = SimpleNamespace(max_epochs=4, current_epoch=0)
    module._trainer = trainer
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    seen, targets = [], module.targets
    monkeypatch.setattr(module, "targets", lambda lm, size: (seen.append(lm.clone()), targets(lm, size))[1])
    given = torch.tensor([[[10.0, 12.0], [40.0, 50.0]], [[20.0, 22.0], [30.0, 33.0]]])
    batch = {"image": torch.randn(2, 1, 64, 64), "landmarks": given, "domain": [0, 0], "index": [5, 7]}
    for epoch in range(4):  # no optimiser step: the weights, so the predictions, stay the same
        trainer.current_epoch = epoch
        module.on_train_epoch_start()
        module.training_step(batch, 0)
    with torch.no_grad():
        own = decode_largest_component(module(batch["image"], 0))
    # 1-based epochs 1 and 2 are not above 0.5 x 4: the given labels; epochs 3 and 4 train on the
    # predictions of epochs 2 and 3
    assert torch.equal(seen[0], given) and torch.equal(seen[1], given)
    assert not torch.allclose(seen[2], given)
    assert torch.allclose(seen[2], own) and torch.allclose(seen[3], own)
    # a sample without a prediction from the previous epoch keeps its label
    module.on_train_epoch_start()
    module.training_step({**batch, "index": [5, 8]}, 0)
    assert torch.allclose(seen[4][0], own[0]) and torch.equal(seen[4][1], given[1])
    with pytest.raises(Exception, match="self_training"):
        DATRModule(num_landmarks=[2], variant="tiny", self_training=1.0)

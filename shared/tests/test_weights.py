"""medzoo.weights: safetensors round trips, safe torch.load, and Hugging Face loading offline."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
from torch import nn

from medzoo.errors import MedzooWeightsError
from medzoo.weights import load_hf_model, load_hf_tokenizer, load_weights, read_weights_metadata, save_weights


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    # Input (B, 1, 8, 8) -> conv (B, 4, 6, 6) -> (B, 2).
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_safetensors_round_trip_restores_the_model(tmp_path):
    net = _tiny_net()
    x = torch.randn(2, 1, 8, 8)
    net.eval()
    expected = net(x)
    path = save_weights(net, tmp_path / "sub" / "net.safetensors", metadata={"package": "medzoo-core"})
    assert [p.name for p in path.parent.iterdir()] == ["net.safetensors"]
    state = load_weights(path)
    _assert_same_state(state, net.state_dict())  # includes BatchNorm buffers and num_batches_tracked
    fresh = _tiny_net()
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    torch.testing.assert_close(fresh(x), expected)
    assert read_weights_metadata(path) == {"package": "medzoo-core"}


def test_tied_weights_are_saved(tmp_path):
    embedding = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight  # tied, as in language models
    model = nn.ModuleDict({"embedding": embedding, "head": head})
    state = {"embedding.weight": embedding.weight, "head.weight": head.weight}
    save_weights(state, tmp_path / "tied.safetensors")
    back = load_weights(tmp_path / "tied.safetensors")
    model.load_state_dict(back, strict=True)
    torch.testing.assert_close(back["head.weight"], embedding.weight.detach())


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_torch_files_load_with_weights_only(tmp_path, suffix):
    state = _tiny_net().state_dict()
    torch.save(state, tmp_path / f"w{suffix}")
    _assert_same_state(load_weights(tmp_path / f"w{suffix}"), state)


def test_lightning_checkpoint_gives_its_state_dict(tmp_path):
    state = _tiny_net().state_dict()
    checkpoint = {"epoch": 3, "global_step": 120, "state_dict": state, "optimizer_states": [], "loops": {}}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    _assert_same_state(load_weights(tmp_path / "last.ckpt"), state)
    torch.save({"model": state, "epoch": 1}, tmp_path / "nested.pth")
    _assert_same_state(load_weights(tmp_path / "nested.pth", key="model"), state)
    with pytest.raises(MedzooWeightsError, match=re.escape("pass key=")):
        load_weights(tmp_path / "nested.pth")


class _Payload:
    """Not a tensor: weights_only=True must refuse to build it (this is how pickle exploits start)."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"weight": _Payload()}, handle, protocol=2)
    with pytest.raises(MedzooWeightsError, match=re.escape("evil.pt: refused to load")):
        load_weights(tmp_path / "evil.pt")
    assert "this must never run" not in capsys.readouterr().out


def test_bad_weight_files(tmp_path):
    with pytest.raises(MedzooWeightsError, match="no such weights file"):
        load_weights(tmp_path / "absent.safetensors")
    save_weights({"w": torch.ones(1000)}, tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MedzooWeightsError, match=re.escape("cut.safetensors: not a valid safetensors file")):
        load_weights(tmp_path / "cut.safetensors")
    torch.save({"w": torch.ones(1000)}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(MedzooWeightsError, match=re.escape("cut.pt: not a readable torch file")):
        load_weights(tmp_path / "cut.pt")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(MedzooWeightsError, match=re.escape("unsupported weights suffix '.npz'")):
        load_weights(tmp_path / "w.npz")
    with pytest.raises(MedzooWeightsError, match="cannot save entry 'step' of type int"):
        save_weights({"step": 3}, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


# ----------------------------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers", reason="the Hugging Face helpers need medzoo-core[hf]")


@pytest.fixture(scope="module")
def tiny_bert(transformers, tmp_path_factory):
    """A 1-layer BERT and a 10-word WordPiece tokenizer saved with save_pretrained (no download)."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = transformers.BertConfig(
        vocab_size=12,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(folder)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "acute", "cardiopulmonary", "process", "."]
    vocab = folder / "source_vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(str(vocab)).save_pretrained(folder)  # positional: vocab file in v4 and v5
    return folder, model


def test_hf_model_and_tokenizer_from_local_folder(transformers, tiny_bert):
    folder, model = tiny_bert
    tokenizer = load_hf_tokenizer(folder)
    ids = tokenizer("No acute cardiopulmonary process.", return_tensors="pt")
    assert ids["input_ids"].tolist() == [[2, 5, 6, 7, 8, 9, 3]]
    for cls in (None, transformers.BertModel):
        loaded = load_hf_model(str(folder), cls).eval()
        assert type(loaded) is transformers.BertModel
        _assert_same_state(loaded.state_dict(), model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(loaded(**ids).last_hidden_state, model(**ids).last_hidden_state)


def test_hf_missing_folder(transformers, tmp_path):
    with pytest.raises(MedzooWeightsError, match="no such model folder"):
        load_hf_model(tmp_path / "not-there")


def test_hf_offline_hub_id_says_how_to_download(transformers, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    bogus = "medzoo-test-nonexistent/tiny-model"
    hint = re.escape(f"`huggingface-cli download {bogus} --local-dir DIR`) and pass the folder path")
    with pytest.raises(MedzooWeightsError, match=hint):
        load_hf_model(bogus)
    with pytest.raises(MedzooWeightsError, match=hint):
        load_hf_tokenizer(bogus)


def test_hf_trust_remote_code_stays_off_unless_asked(transformers, tiny_bert, monkeypatch):
    folder, _ = tiny_bert
    seen = []
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **kwargs: seen.append(kwargs))
    load_hf_model(folder)
    load_hf_model(folder, trust_remote_code=True, revision="main")
    assert seen == [{"trust_remote_code": False}, {"trust_remote_code": True, "revision": "main"}]

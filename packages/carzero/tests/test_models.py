"""Known-answer tests of CARZero's networks and loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from carzero import create_model
from carzero.models import (
    MODEL_CONFIGS,
    ImageEncoder,
    SimilarityRepresentation,
    TextEncoder,
    carzero_loss,
    continuation_mask_from_tokens,
    merge_word_pieces,
    sincos_2d_position_embedding,
    symmetric_cross_entropy,
)

SENTENCES = [
    "there is pneumothorax",
    "there is a small left pleural effusion",
    "no cardiomegaly",
    "lungs are clear",
]


def encode_batch(model, tokenizer, batch_size=4, seed=0):
    torch.manual_seed(seed)
    images = torch.randn(batch_size, 3, 32, 32)
    tokens = tokenizer(SENTENCES[:batch_size])
    return images, tokens


def test_similarity_matrices_are_b_by_b(tiny_parts):
    model, tokenizer = tiny_parts
    images, tokens = encode_batch(model, tokenizer, batch_size=3)
    s_i2t, s_t2i = model(images, **tokens)
    assert s_i2t.shape == (3, 3) and s_t2i.shape == (3, 3)
    # Rectangular case: 3 images against 4 texts keeps the row/column meaning.
    image_global, image_memory = model.encode_image(images)
    sentence, text_memory, _ = model.encode_text(**tokenizer(SENTENCES))
    s_i2t, s_t2i = model.similarities(image_global, image_memory, sentence, text_memory)
    assert s_i2t.shape == (3, 4) and s_t2i.shape == (4, 3)


def test_symmetric_cross_entropy_known_answer():
    similarity = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    # Rows: CE([2, 0], 0) = log(1 + e^-2); CE([1, 3], 1) = log(1 + e^-2).
    # Columns: CE([2, 1], 0) = log(1 + e^-1); CE([0, 3], 1) = log(1 + e^-3).
    rows = math.log1p(math.exp(-2))
    cols = 0.5 * (math.log1p(math.exp(-1)) + math.log1p(math.exp(-3)))
    expected = 0.5 * (rows + cols)
    assert symmetric_cross_entropy(similarity).item() == pytest.approx(expected, rel=1e-6)
    # Total loss = L(S_i2t) + L(S_t2i); a perfectly separated pair of matrices goes to ~0.
    assert carzero_loss(similarity, similarity.t()).item() == pytest.approx(2 * expected, rel=1e-6)
    eye = 50.0 * torch.eye(3)
    assert carzero_loss(eye, eye).item() < 1e-10
    with pytest.raises(ValueError, match="square"):
        symmetric_cross_entropy(torch.zeros(2, 3))


def test_gradients_reach_both_encoders_and_fusion(tiny_parts):
    model, tokenizer = tiny_parts
    images, tokens = encode_batch(model, tokenizer)
    loss = carzero_loss(*model(images, **tokens))
    loss.backward()
    for name in ("image_encoder", "text_encoder", "fusion"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad and p.grad is not None]
        assert grads, f"no gradient in {name}"
        assert sum(g.abs().sum().item() for g in grads) > 0, f"zero gradient in {name}"
    # The MAE-style sin-cos position embedding is fixed.
    assert model.image_encoder.vit.pos_embed.grad is None


def test_one_fusion_module_serves_both_directions(tiny_parts):
    model, tokenizer = tiny_parts
    fusion_params = {id(p) for p in model.fusion.parameters()}
    similarity_modules = [m for m in model.modules() if isinstance(m, SimilarityRepresentation)]
    assert len(similarity_modules) == 1
    # Perturbing the fusion's parameters changes BOTH directions; gradients of each direction alone reach it.
    model.eval()
    images, tokens = encode_batch(model, tokenizer)
    s_i2t, s_t2i = model(images, **tokens)
    for direction in (s_i2t, s_t2i):
        model.zero_grad()
        direction.sum().backward(retain_graph=True)
        touched = {id(p) for p in model.fusion.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert touched and touched <= fusion_params
    # The parameter count equals one decoder, not two.
    single = SimilarityRepresentation(32, depth=2, num_heads=2, ffn_dim=64)
    assert sum(p.numel() for p in model.fusion.parameters()) == sum(p.numel() for p in single.parameters())


def test_no_self_attention_queries_are_permutation_equivariant():
    torch.manual_seed(0)
    fusion = SimilarityRepresentation(16, depth=4, num_heads=4, ffn_dim=32).eval()
    memory = torch.randn(3, 7, 16)
    queries = torch.randn(5, 16)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    scores = fusion(memory, queries)
    assert torch.allclose(fusion(memory, queries[permutation]), scores[:, permutation], atol=1e-6)
    # Stronger: a query's score does not depend on which other queries are present.
    assert torch.allclose(fusion(memory, queries[:1]), scores[:, :1], atol=1e-6)
    assert not any("self_attn" in name for name, _ in fusion.named_modules())


def test_word_piece_merging_known_answer():
    tokens = [
        ["[CLS]", "there", "is", "pneu", "##mo", "##thorax", "[SEP]", "[PAD]"],
        ["[CLS]", "cardio", "##megaly", "[SEP]", "[PAD]", "[PAD]", "[PAD]", "[PAD]"],
    ]
    continuation = continuation_mask_from_tokens(tokens)
    assert continuation[0].tolist() == [False, False, False, False, True, True, False, False]
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    # Feature of token j = one-hot(j) * 10^j so each merged word is a readable sum.
    features = torch.zeros(2, 8, 8)
    for j in range(8):
        features[:, j, j] = 10.0**j
    words, word_mask = merge_word_pieces(features, attention, continuation, max_words=10)
    assert words.shape == (2, 10, 8)
    # Sentence 0: [CLS], there, is, pneu+##mo+##thorax, [SEP]; pad token 7 is dropped.
    expected_rows = [[0], [1], [2], [3, 4, 5], [6]]
    for w, pieces in enumerate(expected_rows):
        expected = torch.zeros(8)
        expected[pieces] = torch.tensor([10.0**j for j in pieces])
        assert torch.equal(words[0, w], expected)
    assert words[0, 5:].abs().sum() == 0
    assert word_mask[0].tolist() == [True] * 5 + [False] * 5
    # Sentence 1: [CLS], cardio+##megaly, [SEP].
    assert torch.equal(words[1, 1, :3], torch.tensor([0.0, 10.0, 100.0]))
    assert word_mask[1].sum() == 3


def test_text_encoder_sums_last_four_layers_and_means_over_padded_length(tiny_parts):
    model, tokenizer = tiny_parts
    encoder: TextEncoder = model.text_encoder.eval()
    tokens = tokenizer(["there is pneumothorax"])
    assert tokenizer.tokenizer.convert_ids_to_tokens(tokens["input_ids"][0])[3:6] == [
        "pneu",
        "##mo",
        "##thorax",
    ]
    hidden = encoder.backbone(
        input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], output_hidden_states=True
    ).hidden_states
    summed = hidden[-1] + hidden[-2] + hidden[-3] + hidden[-4]
    sentence, words, _ = encoder(**tokens)
    assert torch.allclose(words[0, 3], summed[0, 3:6].sum(0), atol=1e-5)
    assert torch.allclose(words[0, 4], summed[0, 6], atol=1e-5)  # [SEP]
    # Mean over the padded length W = 24, padding zeros included.
    assert torch.allclose(sentence[0], summed[0].sum(0) / 24, atol=1e-5)


def test_zero_shot_score_is_mean_of_i2t_and_transposed_t2i(tiny_parts):
    model, tokenizer = tiny_parts
    model.eval()
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    image_global, image_memory = model.encode_image(images)
    prompt_sentence, prompt_memory, _ = model.encode_text(**tokenizer(["there is pneumothorax", "no edema"]))
    scores = model.zero_shot_scores(image_global, image_memory, prompt_sentence, prompt_memory)
    s_i2t = model.fusion(image_memory, prompt_sentence)  # (3, 2)
    s_t2i = model.fusion(prompt_memory, image_global)  # (2, 3)
    assert scores.shape == (3, 2)
    assert torch.allclose(scores, (s_i2t + s_t2i.t()) / 2, atol=1e-6)
    # And entry by entry from single pairs.
    single = model.zero_shot_scores(
        image_global[2:3], image_memory[2:3], prompt_sentence[1:], prompt_memory[1:]
    )
    assert torch.allclose(single[0, 0], scores[2, 1], atol=1e-5)


def test_similarity_heads():
    linear = SimilarityRepresentation(32, depth=1, num_heads=2, ffn_dim=64, head="linear")
    mlp = SimilarityRepresentation(32, depth=1, num_heads=2, ffn_dim=64, head="mlp")
    assert [m.out_features for m in mlp.head if isinstance(m, torch.nn.Linear)] == [1024, 512, 256, 1]
    assert linear.head.out_features == 1
    for fusion in (linear, mlp):
        assert fusion(torch.randn(2, 5, 32), torch.randn(3, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="linear"):
        SimilarityRepresentation(32, head="cosine")


def test_image_encoder_returns_cls_and_patches_with_fixed_sincos():
    encoder = ImageEncoder(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    cls_token, patches = encoder(torch.randn(2, 3, 64, 64))
    assert cls_token.shape == (2, 32) and patches.shape == (2, 16, 32)
    table = sincos_2d_position_embedding(4, 32)
    assert torch.equal(encoder.vit.pos_embed.data, table)
    assert table[0, 0].abs().sum() == 0  # CLS slot
    # Patch (row 0, col 1): first half encodes the column, so sin(1 * omega_0) = sin(1).
    assert table[0, 2, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)
    assert table[0, 2, 16].item() == pytest.approx(0.0, abs=1e-6)  # row 0 -> sin(0)


def test_overfit_tiny_paired_set_to_full_matching_accuracy(tiny_parts):
    model, tokenizer = tiny_parts
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    tokens = tokenizer(SENTENCES)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def matching_scores():
        model.eval()
        with torch.no_grad():
            image_global, image_memory = model.encode_image(images)
            sentence, memory, _ = model.encode_text(**tokens)
            scores = model.zero_shot_scores(image_global, image_memory, sentence, memory)
        model.train()
        return scores

    first = carzero_loss(*model(images, **tokens)).item()
    assert first == pytest.approx(4 * math.log(4) / 2, rel=0.05)  # chance level at init: 2 log B
    for step in range(150):
        optimizer.zero_grad()
        loss = carzero_loss(*model(images, **tokens))
        loss.backward()
        optimizer.step()
        if step % 10 == 9 and loss.item() < 0.05 * first:
            break
    scores = matching_scores()
    assert loss.item() < 0.05 * first
    assert torch.equal(scores.argmax(1), torch.arange(4)), "image-to-text matching accuracy below 100%"
    assert torch.equal(scores.argmax(0), torch.arange(4)), "text-to-image matching accuracy below 100%"
    assert F.cross_entropy(scores, torch.arange(4)).item() < 0.1


def test_frozen_text_encoder_gets_no_updates_and_stays_in_eval_mode(tiny_bert_dir):
    from carzero.module import CARZeroModule

    overrides = {"text_model": str(tiny_bert_dir), "fusion_depth": 1}
    module = CARZeroModule(variant="tiny", overrides=overrides, freeze_text_encoder=True)
    module.train()
    assert not module.model.text_encoder.training and module.model.fusion.training
    before = {k: v.clone() for k, v in module.model.text_encoder.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    s_i2t, s_t2i = module(torch.randn(4, 3, 32, 32), SENTENCES)
    carzero_loss(s_i2t, s_t2i).backward()
    optimizer.step()
    assert all(p.grad is None for p in module.model.text_encoder.parameters())
    assert module.model.image_encoder.vit.patch_embed.proj.weight.grad is not None
    for key, value in module.model.text_encoder.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    # Frozen: the text features are those of the encoder in eval mode, identical across calls.
    tokens = module.tokenize(SENTENCES)
    first = module.model.encode_text(**tokens)[0]
    torch.testing.assert_close(module.model.encode_text(**tokens)[0], first)


def test_named_configurations_and_create_model(tiny_bert_dir):
    from medzoo.errors import MedzooDataError

    assert {"paper", "demo", "tiny"} <= set(MODEL_CONFIGS)
    paper = MODEL_CONFIGS["paper"]
    # The paper: ViT-B/16 at 224, 97 words, a 4-layer fusion with 4 heads and FFN 1024, linear head.
    assert (paper["img_size"], paper["patch_size"], paper["vit_dim"], paper["vit_depth"]) == (
        224,
        16,
        768,
        12,
    )
    assert (paper["max_words"], paper["fusion_depth"], paper["fusion_heads"], paper["fusion_ffn_dim"]) == (
        97,
        4,
        4,
        1024,
    )
    model = create_model("tiny", text_model=str(tiny_bert_dir), fusion_depth=1, head="mlp")
    assert len(model.fusion.layers) == 1 and isinstance(model.fusion.head, torch.nn.Sequential)
    assert model.image_encoder.vit.patch_embed.img_size == (32, 32)
    with pytest.raises(MedzooDataError, match="one of demo, paper, tiny"):
        create_model("base")
    with pytest.raises(MedzooDataError, match="unknown settings"):
        create_model("tiny", text_model=str(tiny_bert_dir), vit="tiny")


# ------------------------------------------------------------- the fusion against its 0.2 implementation


def reference_fusion(fusion, memory, queries, padding=None, need_weights=False):
    """carzero 0.2's Similarity Representation, kept as the reference: nn.MultiheadAttention (batch_first,
    which transposes internally) on queries expanded over the memories; same parameters."""
    memory = fusion.shared_norm(memory)
    tokens = fusion.shared_norm(queries).unsqueeze(0).expand(memory.shape[0], -1, -1)
    maps = []
    for layer in fusion.layers:
        attended, weights = layer.cross_attention(
            layer.norm_attention(tokens), memory, memory, key_padding_mask=padding,
            need_weights=need_weights, average_attn_weights=False,
        )  # fmt: skip
        maps.append(weights)
        tokens = tokens + layer.dropout_attention(attended)
        tokens = tokens + layer.dropout_ffn(layer.ffn(layer.norm_ffn(tokens)))
    logits = fusion.head(fusion.dropout(fusion.shared_norm(tokens))).squeeze(-1)
    return (logits, maps) if need_weights else logits


def perturbed_fusion(dim=64, depth=2, heads=4, head="linear", side="auto"):
    torch.manual_seed(0)
    fusion = SimilarityRepresentation(dim, depth, heads, 2 * dim, dropout=0.1, head=head).eval()
    with torch.no_grad():  # away from the init (zero biases, shared LayerNorm at identity)
        for parameter in fusion.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    for layer in fusion.layers:
        layer.attention_side = side
    return fusion


@pytest.mark.parametrize(("head", "side"), [("linear", "auto"), ("mlp", "memory"), ("linear", "query")])
def test_fusion_equals_the_reference_implementation(head, side):
    fusion = perturbed_fusion(head=head, side=side)
    memory, queries = torch.randn(6, 11, 64), torch.randn(9, 64)
    padding = torch.zeros(6, 11, dtype=torch.bool)
    padding[2, 5:], padding[4, 1:] = True, True
    with torch.no_grad():
        for mask in (None, padding):
            expected = reference_fusion(fusion, memory, queries, mask)
            torch.testing.assert_close(fusion(memory, queries, mask), expected, rtol=1e-5, atol=1e-5)
            scores, _ = fusion(memory, queries, mask, return_attention=True)
            torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    # gradients agree too (training mode with dropout off)
    fusion.train()
    for module in fusion.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
    ours = torch.autograd.grad(fusion(memory, queries, padding).square().sum(), list(fusion.parameters()))
    ref = torch.autograd.grad(
        reference_fusion(fusion, memory, queries, padding).square().sum(), list(fusion.parameters())
    )
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_scoring_forward_in_place_equals_the_autograd_forward():
    # Without autograd (zero-shot, evaluate, validation) each layer writes its residual sums in place
    # (`add_ffn_`); with autograd, in training mode or under autocast it takes the out-of-place path.
    fusion = perturbed_fusion()
    memory, queries = torch.randn(6, 11, 64), torch.randn(9, 64)
    expected = fusion(memory, queries).detach()  # grad enabled: the out-of-place path
    with torch.inference_mode():
        torch.testing.assert_close(fusion(memory, queries), expected, rtol=1e-5, atol=1e-6)
    layer, tokens = fusion.layers[1], torch.randn(2, 3, 64)
    with torch.no_grad():
        torch.testing.assert_close(layer.add_ffn_(tokens.clone()), tokens + layer.ffn(layer.norm_ffn(tokens)))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 products, fp32 residuals: no in-place mix
            torch.testing.assert_close(fusion(memory, queries).float(), expected, rtol=0.05, atol=0.05)


def test_query_side_is_chosen_where_it_needs_fewer_operations():
    layer = SimilarityRepresentation(768, 1, 4, 1024).layers[0]  # the paper's width and heads
    # B x B training pairs at B = 64: the image memory (197 tokens) is longer than the 64 queries per image
    assert layer.query_side_is_cheaper(shared_queries=False, num_queries=64, memory_length=197)
    assert layer.query_side_is_cheaper(shared_queries=True, num_queries=64, memory_length=197)
    # zero-shot with C = 192 prompts on an image, and B = 256 training pairs: the memory side
    assert not layer.query_side_is_cheaper(shared_queries=False, num_queries=192, memory_length=197)
    assert not layer.query_side_is_cheaper(shared_queries=False, num_queries=256, memory_length=197)


@pytest.mark.parametrize("side", ["memory", "query"])
def test_dropped_attention_weights_drop_the_value_bias_too(side):
    # Known answer: with attention dropout 1 every weight is dropped, so the attention's output before the
    # output projection is 0 (the values' bias included) and the layer returns out_proj's bias.
    layer = perturbed_fusion(side=side).layers[0].train()
    layer.cross_attention.dropout = 1.0
    memory, queries = torch.randn(3, 7, 64), torch.randn(3, 5, 64)
    attended, _ = layer.attend(queries, memory, return_attention=True)  # explicit softmax on both sides
    torch.testing.assert_close(attended, layer.cross_attention.out_proj.bias.expand(3, 5, 64))


@pytest.mark.parametrize("side", ["memory", "query"])
def test_attention_maps_equal_multihead_attention_weights(tiny_parts, side):
    fusion = perturbed_fusion(side=side)
    memory, queries = torch.randn(3, 7, 64), torch.randn(4, 64)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 4:] = True
    with torch.no_grad():
        _, expected = reference_fusion(fusion, memory, queries, padding, need_weights=True)
        _, maps = fusion(memory, queries, padding, return_attention=True)
    for ours, ref in zip(maps, expected, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)  # (B, heads, Q, M)
    assert maps[0][1, ..., 4:].abs().max() == 0  # padded memory gets no attention
    # The CARZero helper: mean over layers and heads, patches only, rows sum to 1 - the CLS share.
    model, _ = tiny_parts
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, image_memory = model.encode_image(images)
        sentence = torch.randn(5, image_memory.shape[-1])
        patch_maps = model.image_attention_maps(image_memory, sentence)
        _, all_maps = model.fusion(image_memory, sentence, return_attention=True)
    cls_share = torch.stack(all_maps).mean(dim=(0, 2))[..., 0]
    assert patch_maps.shape == (2, 5, image_memory.shape[1] - 1)
    torch.testing.assert_close(patch_maps.sum(-1), 1 - cls_share, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- the demo's training options


def test_image_lr_scale_puts_the_image_encoder_in_its_own_group(tiny_bert_dir):
    from functools import partial

    from carzero.module import CARZeroModule

    module = CARZeroModule(
        "tiny", overrides={"text_model": str(tiny_bert_dir)}, image_lr_scale=0.1,
        optimizer=partial(torch.optim.Adam, lr=1e-3),
    )  # fmt: skip
    optimizer = module.configure_optimizers()
    rest, image = optimizer.param_groups
    assert rest["lr"] == pytest.approx(1e-3) and image["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in image["params"]} == {id(p) for p in module.model.image_encoder.parameters()}
    assert len(rest["params"]) + len(image["params"]) == len(list(module.parameters()))
    plain = CARZeroModule("tiny", overrides={"text_model": str(tiny_bert_dir)},
                          optimizer=partial(torch.optim.Adam, lr=1e-3)).configure_optimizers()  # fmt: skip
    assert len(plain.param_groups) == 1


def test_global_warmup_loss_is_clip_on_the_normalised_tokens_and_overfits(tiny_bert_dir):
    from carzero.module import CARZeroModule

    torch.manual_seed(0)
    module = CARZeroModule("tiny", overrides={"text_model": str(tiny_bert_dir)}, freeze_text_encoder=True)
    images = torch.randn(4, 3, 32, 32)
    texts = ["there is pneumothorax", "there is effusion", "no effusion", "there is a mass"]
    # Known answer: CLIP's symmetric cross-entropy on LayerNorm-ed, L2-normalised features at scale 1/0.07.
    with torch.no_grad():
        image_global, _ = module.model.encode_image(images)
        sentence = module.model.encode_text(**module.tokenize(texts))[0]
        norm = module.model.fusion.shared_norm
        a = F.normalize(norm(image_global), dim=-1)
        b = F.normalize(norm(sentence), dim=-1)
        logits = (a @ b.t()) / 0.07
        targets = torch.arange(4)
        expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
        torch.testing.assert_close(module.global_contrastive_loss(images, texts), expected)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    start = module.global_contrastive_loss(images, texts).item()
    for _ in range(60):
        loss = module.global_contrastive_loss(images, texts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * start and start > 0.5 * math.log(4)


def test_cached_prompt_keys_values_give_the_same_zero_shot_scores(tiny_parts):
    model, tokenizer = tiny_parts
    model.eval()
    images = torch.randn(3, 3, 32, 32)
    prompts = tokenizer(["there is pneumothorax", "there is a mass", "no effusion", "there is effusion"])
    with torch.no_grad():
        image_global, image_memory = model.encode_image(images)
        sentence, memory, padding = model.encode_text(**prompts)
        plain = model.zero_shot_scores(image_global, image_memory, sentence, memory, padding)
        cache = model.fusion.memory_keys_values(memory)
        cached = model.zero_shot_scores(image_global, image_memory, sentence, memory, padding, cache)
        s_i2t, s_t2i = model.similarities(image_global, image_memory, sentence, memory, padding)
    torch.testing.assert_close(cached, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(plain, 0.5 * (s_i2t + s_t2i.t()), rtol=1e-6, atol=1e-6)
    assert len(cache) == len(model.fusion.layers)

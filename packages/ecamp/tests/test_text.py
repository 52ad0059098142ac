"""Entity-aware masking, re-balanced weights, context insertion and the tokenizer: known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ecamp.text import (
    EntityAwareMasker,
    insert_context,
    load_entities,
    rebalanced_weights,
    rule_based_context,
    train_wordpiece,
)


def tokens_of(tokenizer, ids):
    return [tokenizer.id_to_token(i) for i in ids]


def test_entity_list_is_the_reference_44_words():
    entities = load_entities()
    assert len(entities) == 44 and len(set(entities)) == 44
    assert {"atelectasis", "effusion", "pneumothorax", "COPD", "vasculature"} <= set(entities)


def test_ids_come_from_the_tokenizer(tokenizer):
    masker = EntityAwareMasker(tokenizer, max_length=16)
    assert masker.mask_id == 5 and masker.period_id == 10 and masker.pad_id == 0
    ids, attention = masker.encode("Mild cardiomegaly.")
    assert tokens_of(tokenizer, ids[:4]) == ["[CLS]", "mild", "cardiomegaly", "."]
    assert ids[4:] == [0] * 12 and attention == [1] * 4 + [0] * 12
    masked_ids, masked, _, _ = masker.mask(ids, np.random.default_rng(0))
    assert all(m == 5 for m, flag in zip(masked_ids, masked, strict=True) if flag)
    assert [i for i, flag in zip(masked_ids, masked, strict=True) if not flag] == [
        i for i, flag in zip(ids, masked, strict=True) if not flag
    ]


def _rates(masker, text, trials=3000):
    ids, _ = masker.encode(text)
    counts = np.zeros(len(ids))
    rng = np.random.default_rng(0)
    for _ in range(trials):
        counts += masker.mask(ids, rng)[1]
    return ids, counts / trials


def test_masking_rates_match_the_paper(tokenizer):
    masker = EntityAwareMasker(tokenizer, max_length=24)
    ids, rates = _rates(masker, "small left pleural effusion and mild edema . the lungs are clear .")
    tokens = tokens_of(tokenizer, ids)
    entity = [i for i, t in enumerate(tokens) if t in ("effusion", "edema")]
    other = [i for i, t in enumerate(tokens) if t not in ("effusion", "edema", "[CLS]", "[PAD]")]
    tolerance = 4 * np.sqrt(0.75 * 0.25 / 3000)  # 4 standard errors
    assert np.abs(rates[entity] - 0.75).max() < tolerance
    assert abs(rates[other].mean() - 0.70) < tolerance / np.sqrt(len(other)) * 2
    assert np.abs(rates[other] - 0.70).max() < tolerance
    assert rates[0] == 0 and rates[len(tokens) - 1] == 0  # [CLS] and padding are never masked


def test_a_report_without_entities_is_masked_at_075(tokenizer):
    masker = EntityAwareMasker(tokenizer, max_length=16)
    ids, rates = _rates(masker, "the lungs are clear . heart size normal .")
    real = [i for i, t in enumerate(tokens_of(tokenizer, ids)) if t not in ("[CLS]", "[PAD]")]
    assert abs(rates[real].mean() - 0.75) < 0.02
    assert masker("the lungs are clear .", np.random.default_rng(0)).context == []


def test_word_pieces_follow_their_head(tokenizer):
    masker = EntityAwareMasker(tokenizer, max_length=16)
    ids, _ = masker.encode("small pneumothorax and mild edema")
    tokens = tokens_of(tokenizer, ids)
    assert tokens[2:5] == ["pneu", "##mo", "##thorax"]
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        masked = masker.mask(ids, rng)[1]
        assert masked[2] == masked[3] == masked[4]
        seen.add(masked[2])
    assert seen == {True, False}  # both outcomes happen: the test can fail


def test_context_positions_are_the_two_tokens_before_each_entity(tokenizer):
    text = "there is no evidence of pleural effusion . mild cardiomegaly ."
    reference = EntityAwareMasker(tokenizer, max_length=20)
    report = reference(text, np.random.default_rng(0))
    tokens = tokens_of(tokenizer, report.ids)
    assert tokens[5:11] == ["of", "pleural", "effusion", ".", "mild", "cardiomegaly"]
    # effusion (7): of (5), pleural (6); cardiomegaly (10): mild (9); the '.' (8) is skipped (reference).
    assert sorted(report.context) == [5, 6, 9]
    assert report.entity[7] and report.entity[10] and sum(report.entity) == 2
    # Stopping at the sentence boundary: the window of an entity never reaches back past a '.'.
    stopping = EntityAwareMasker(tokenizer, max_length=20, context_stops_at_sentence=True)
    ids, _ = stopping.encode(". cardiomegaly . edema")
    _, _, _, context = stopping.mask(ids, np.random.default_rng(0))
    assert context == []
    ids, _ = stopping.encode("effusion . mild edema")
    assert sorted(stopping.mask(ids, np.random.default_rng(0))[3]) == [3]


def test_plurals_are_not_entities(tokenizer):
    masker = EntityAwareMasker(tokenizer, max_length=12)
    report = masker("small effusions", np.random.default_rng(0))
    assert not any(report.entity)


def test_rebalanced_weights_known_answer(tokenizer):
    masker = EntityAwareMasker(tokenizer, max_length=20)
    report = masker(
        "there is no evidence of pleural effusion . mild cardiomegaly .", np.random.default_rng(0)
    )
    w = np.array(report.weights)
    # 5 down-weighted tokens (positions 1-5), context {5, 6, 9}, one of them (5) down-weighted:
    expand = (0.95 * (5 - 1) + 3) / (3 - 0.95 * 1)
    expected = np.ones(20)
    expected[1:6] = 0.05
    expected[[5, 6, 9]] *= expand
    np.testing.assert_allclose(w, expected, rtol=1e-12)
    assert w.sum() == pytest.approx(20.0)  # the total weight (padding included) is kept


def test_rebalanced_weights_without_context_scale_every_token():
    # ids: [CLS] there is no edema-like(no entity) ... ; phrase "there is no" = [4, 6, 7]
    ids = [2, 4, 6, 7, 20, 10, 0, 0]
    w = rebalanced_weights(ids, [], [[4, 6, 7, 8, 9], [4, 6, 7]])
    scale = 8 / (8 - 0.95 * 3)
    np.testing.assert_allclose(
        w, [scale, 0.05 * scale, 0.05 * scale, 0.05 * scale, scale, scale, scale, scale]
    )
    assert rebalanced_weights([2, 20, 10, 0], [1], [[4, 6, 7]]) == [1.0, 1.0, 1.0, 1.0]


def test_insert_context_at_a_sentence_boundary():
    report = "Small effusion. Mild edema."
    context = " Effusion is fluid."
    rng = np.random.default_rng(0)
    outputs = [insert_context(report, context, rng) for _ in range(4000)]
    inserted = [o for o in outputs if o != report]
    assert abs(len(inserted) / len(outputs) - 0.8) < 0.03
    # Three pieces ("Small effusion", " Mild edema", "") -> four insertion points, all used.
    assert set(inserted) == {
        " Effusion is fluid.Small effusion. Mild edema.",
        "Small effusion. Effusion is fluid. Mild edema.",
        "Small effusion. Mild edema. Effusion is fluid.",
    }
    assert insert_context(report, "", rng) == report


def test_rule_based_context_names_the_report_entities():
    from ecamp.text import load_entity_context

    table = load_entity_context()
    text = rule_based_context("Small left pleural effusion. No pneumothorax. Effusion again.", table)
    assert text == table["effusion"] + " " + table["pneumothorax"]  # first-occurrence order, no repeats
    assert rule_based_context("The lungs are clear.") == ""


def test_trained_wordpiece_has_the_specials_and_prepends_cls():
    tokenizer = train_wordpiece(
        ["Mild cardiomegaly. Small pleural effusion."] * 20, vocab_size=120, min_frequency=1
    )
    encoding = tokenizer.encode("mild effusion")
    assert encoding.tokens[0] == "[CLS]" and "[SEP]" not in encoding.tokens
    assert tokenizer.decode(encoding.ids) == "mild effusion"
    assert all(tokenizer.token_to_id(t) is not None for t in ("[PAD]", "[MASK]", "[UNK]"))

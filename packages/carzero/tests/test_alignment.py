"""Prompt alignment: rule-based rewrite, a tiny causal LM built here, shipped/overridden class prompts."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from carzero.alignment import (
    LLMReportAligner,
    class_prompts,
    load_align_template,
    load_class_prompts,
    rule_based_align,
)
from carzero.cli import main
from medzoo.errors import MedzooDataError

REPORTS = [
    "Small left pleural effusion. No pneumothorax.",
    "The lungs are clear.",
    "Heart size is enlarged; mild pulmonary edema. Without focal consolidation.",
]


def test_rule_based_alignment_known_answers():
    assert rule_based_align(REPORTS[0]) == "there is small left pleural effusion. there is no pneumothorax."
    assert rule_based_align(REPORTS[1]) == "there is no acute cardiopulmonary abnormality."
    assert rule_based_align(REPORTS[2]) == (
        "there is cardiomegaly. there is mild pulmonary edema. there is no consolidation."
    )
    with pytest.raises(MedzooDataError, match="non-empty report"):
        rule_based_align("   ")


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    """A randomly initialised 2-layer GPT-2 with a byte-level BPE tokenizer trained here on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_gpt2")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = [load_align_template(), *REPORTS, "there is no pleural effusion. there is mild cardiomegaly."]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    eos = fast.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=fast.vocab_size, n_positions=512, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=False,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    # Make greedy decoding a known answer: the final LayerNorm outputs the constant e_0, and the LM head
    # gives "Ġis" the only non-zero logit, so every new token is " is".
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[fast.get_vocab()["Ġis"], 0] = 10.0
    model.save_pretrained(folder)
    return folder


def test_llm_alignment_is_greedy_generation_with_the_shipped_template(tiny_causal_lm, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = tmp_path / "reports.csv"
    pd.DataFrame({"id": [1, 2], "report": REPORTS[:2]}).to_csv(source, index=False)
    output = tmp_path / "aligned.csv"
    main(["align-reports", "--input", str(source), "--output", str(output), "--model", str(tiny_causal_lm),
          "--max_new_tokens", "12"])  # fmt: skip
    table = pd.read_csv(output)
    assert list(table.columns) == ["id", "report", "aligned_report"] and len(table) == 2
    # Greedy decoding of the rigged model: 12 times " is", cleaned to single spaces.
    assert table["aligned_report"].tolist() == [" ".join(["is"] * 12)] * 2
    # The same text as a direct greedy generate() with the shipped template.
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm).eval()
    encoded = tokenizer(load_align_template().format(report=REPORTS[0]), return_tensors="pt")
    generated = model.generate(**encoded, max_new_tokens=12, do_sample=False)
    new_text = tokenizer.decode(generated[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    assert " ".join(new_text.split()) == table["aligned_report"][0]


def test_llm_alignment_falls_back_to_rules_on_unusable_output(tiny_causal_lm):
    # One new token can never be a two-word sentence.
    aligner = LLMReportAligner(str(tiny_causal_lm), max_new_tokens=1)
    assert aligner(REPORTS) == [rule_based_align(r) for r in REPORTS]
    assert aligner.used_fallback == 3
    strict = LLMReportAligner(str(tiny_causal_lm), max_new_tokens=1, fallback_to_rules=False)
    with pytest.raises(MedzooDataError, match="LLM output"):
        strict(REPORTS[:1])


def test_align_reports_cli_rule_based_and_empty_report(tmp_path):
    source = tmp_path / "reports.csv"
    pd.DataFrame({"report": REPORTS}).to_csv(source, index=False)
    output = main(["align-reports", "--input", str(source), "--output", str(tmp_path / "out.csv")])
    table = pd.read_csv(output)
    assert table["aligned_report"].tolist() == [rule_based_align(r) for r in REPORTS]
    pd.DataFrame({"report": ["No effusion.", ""]}).to_csv(source, index=False)
    with pytest.raises(MedzooDataError, match=r"row 1.*empty report"):
        main(["align-reports", "--input", str(source), "--output", str(tmp_path / "out.csv")])


def test_class_prompts_shipped_and_overridden(tmp_path):
    shipped = load_class_prompts()
    assert class_prompts(["Effusion", "Pleural_Thickening", "Lung Lesion"], shipped) == [
        ["there is pleural effusion"],
        ["there is pleural thickening"],
        ["there is lung lesion"],  # default template
    ]
    override = tmp_path / "prompts.yaml"
    override.write_text("classes:\n  Effusion: [there is effusion, there is fluid]\n")
    table = load_class_prompts(override)
    assert class_prompts(["Effusion", "Mass"], table) == [
        ["there is effusion", "there is fluid"],
        ["there is a mass"],
    ]
    override.write_text("prompts: {}\n")
    with pytest.raises(MedzooDataError, match="default"):
        load_class_prompts(override)


def test_several_prompts_per_class_are_averaged(tiny_bert_dir, tmp_path):
    from carzero.module import CARZeroModule

    override = tmp_path / "prompts.yaml"
    override.write_text("classes:\n  Effusion: [there is effusion, there is pleural effusion]\n")
    overrides = {"text_model": str(tiny_bert_dir)}
    module = CARZeroModule(variant="tiny", overrides=overrides, prompts=str(override)).eval()
    images = torch.randn(2, 3, 32, 32)
    scores = module.zero_shot(images, ["Effusion", "Mass"])
    module.prompts_path = None
    module._prompt_cache.clear()
    with torch.no_grad():
        g, m = module.model.encode_image(images)
        s, mem, _ = module.model.encode_text(
            **module.tokenize(["there is effusion", "there is pleural effusion"])
        )
        single = module.model.zero_shot_scores(g, m, s, mem)
    assert torch.allclose(scores[:, 0], single.mean(1), atol=1e-5)

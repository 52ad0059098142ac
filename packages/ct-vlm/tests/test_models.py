"""Known answers for the networks: patches, MAE loss, projector token counts, splicing, LoRA, generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ct_vlm.language import load_language_model
from ct_vlm.models import (
    IGNORE_INDEX,
    ConvProjector3D,
    LinearProjector,
    ViT3D,
    apply_lora,
    conv_output_grid,
    create_mae,
    create_model,
    create_vision_encoder,
    masked_patch_mse,
    patchify,
    random_masking,
    splice_visual_tokens,
    unpatchify,
)
from medzoo.errors import MedzooDataError


def tiny_vlm(lm_dir, **kwargs):
    lm, tokenizer, image_id = load_language_model(lm_dir)
    return create_model("tiny", language_model=lm, image_token_id=image_id, **kwargs), tokenizer


def test_patchify_matches_the_conv_patch_embedding_and_inverts():
    vit = ViT3D(img_size=(8, 8, 4), patch_size=(4, 4, 2), embed_dim=16, depth=1, num_heads=2)
    volume = torch.randn(2, 1, 8, 8, 4)
    patches = patchify(volume, vit.patch_size)  # (2, 8, 32)
    assert torch.equal(patches[0, 0], volume[0, 0, :4, :4, :2].reshape(-1))
    assert torch.equal(patches[0, 1], volume[0, 0, :4, :4, 2:4].reshape(-1))  # z is the fastest grid axis
    assert torch.equal(unpatchify(patches, vit.grid_size, vit.patch_size), volume)
    # The Conv3d patch embedding is a linear map of the same flattened patches in the same token order.
    weight = vit.patch_embed.weight.permute(0, 2, 3, 4, 1).reshape(16, -1)
    expected = patches @ weight.T + vit.patch_embed.bias
    tokens = vit.patch_embed(volume).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


def test_vit_rejects_a_volume_of_the_wrong_rank_or_size():
    vit = create_vision_encoder("tiny")
    assert vit.grid_size == (4, 4, 4) and vit.num_patches == 64
    with pytest.raises(ValueError, match="rank 5"):
        vit(torch.zeros(1, 32, 32, 16))
    with pytest.raises(ValueError, match="expected"):
        vit(torch.zeros(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        ViT3D(img_size=(30, 32, 16), patch_size=(8, 8, 4))


def test_masked_patch_mse_hand_computed():
    prediction = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [3.0, 1.0]]])
    target = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [1.0, 1.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])  # patch 1 is visible: its huge error does not count
    # raw: patch 0 -> (1 + 1) / 2 = 1; patch 2 -> (4 + 0) / 2 = 2; mean over masked = 1.5
    assert masked_patch_mse(prediction, target, mask, normalize_target=False).item() == pytest.approx(1.5)
    # normalised targets: [0, 0] -> [0, 0] (var 0), so patch 0 -> 1; [1, 1] -> [0, 0], patch 2 -> (9 + 1) / 2
    assert masked_patch_mse(prediction, target, mask, normalize_target=True).item() == pytest.approx(3.0)


def test_random_masking_keeps_a_quarter_and_the_mask_marks_the_rest():
    keep, mask = random_masking(3, 64, 0.75, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (3, 16)
    assert torch.equal(mask.sum(1), torch.full((3,), 48.0))
    assert bool((mask.gather(1, keep) == 0).all())


def test_mae_loss_ignores_the_visible_patches_and_overfits_one_volume():
    torch.manual_seed(0)
    mae = create_mae("tiny", mask_ratio=0.75)
    volume = torch.rand(1, 1, 32, 32, 16)
    keep, mask = random_masking(1, 64, 0.75, generator=torch.Generator().manual_seed(1))
    out = mae(volume, keep)
    assert torch.equal(out.mask, mask)
    manual = masked_patch_mse(out.prediction, patchify(volume, (8, 8, 4)), mask)
    torch.testing.assert_close(out.loss, manual)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = mae(volume, keep).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert mae(volume, keep).loss.item() < 0.4 * first


@pytest.mark.parametrize(
    ("grid", "kernel", "stride", "tokens"),
    [((4, 4, 4), (2, 2, 2), (2, 2, 2), 8), ((16, 16, 16), (2, 2, 2), (2, 2, 2), 512),
     ((16, 16, 8), (3, 3, 3), (2, 2, 2), 7 * 7 * 3), ((16, 16, 16), (4, 4, 2), (4, 4, 2), 4 * 4 * 8)],
)  # fmt: skip
def test_conv_projector_token_count_has_a_known_answer(grid, kernel, stride, tokens):
    projector = ConvProjector3D(8, 12, grid, kernel, stride)
    assert projector.num_tokens == tokens
    assert conv_output_grid(grid, kernel, stride) == projector.out_grid
    n = grid[0] * grid[1] * grid[2]
    assert projector(torch.randn(2, n, 8)).shape == (2, tokens, 12)
    assert LinearProjector(8, 12, n).num_tokens == n


def test_conv_projector_keeps_spatial_layout():
    # A feature present only in one 2x2x2 corner of the grid changes only the visual token of that cell.
    projector = ConvProjector3D(4, 6, (4, 4, 4), 2, 2)
    projector.mix = torch.nn.Identity()  # the 3x3x3 mixing conv spreads neighbours; test the downsampling
    base = torch.zeros(1, 64, 4)
    poked = base.clone()
    grid = poked.view(1, 4, 4, 4, 4)  # B, gx, gy, gz, D
    grid[0, 2:4, 0:2, 0:2] = 1.0  # cell (1, 0, 0) of the 2x2x2 output grid -> token index 1*4 = 4
    changed = (projector(poked) - projector(base)).abs().sum(-1)[0]
    assert changed.nonzero().flatten().tolist() == [4]


def test_visual_tokens_land_exactly_at_the_placeholder_and_labels_ignore_them():
    ids = torch.tensor([[0, 0, 5, 9, 6], [5, 7, 9, 8, 6]])  # left padding (0) in row 0; <image> = 9
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    labels = torch.tensor([[-100, -100, -100, -100, 6], [-100, -100, -100, 8, 6]])
    text = torch.arange(10, dtype=torch.float)[:, None].expand(10, 3)[ids]  # embedding = the id
    visual = torch.full((2, 3, 3), -1.0)
    embeds, new_mask, new_labels = splice_visual_tokens(ids, text, visual, 9, mask, labels)
    assert embeds.shape == (2, 7, 3)
    assert embeds[0, :, 0].tolist() == [0, 0, 5, -1, -1, -1, 6]
    assert embeds[1, :, 0].tolist() == [5, 7, -1, -1, -1, 8, 6]
    assert new_mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert new_labels[1].tolist() == [-100, -100, -100, -100, -100, 8, 6]


def test_a_missing_or_repeated_placeholder_is_an_error():
    text = torch.zeros(1, 3, 2)
    with pytest.raises(ValueError, match="0 <image> placeholders"):
        splice_visual_tokens(torch.tensor([[1, 2, 3]]), text, torch.zeros(1, 2, 2), 9)
    with pytest.raises(ValueError, match="2 <image> placeholders"):
        splice_visual_tokens(torch.tensor([[9, 2, 9]]), text, torch.zeros(1, 2, 2), 9)


def test_the_loss_is_cross_entropy_on_answer_tokens_only(tiny_lm_dir):
    model, tokenizer = tiny_vlm(tiny_lm_dir)
    volume = torch.rand(1, 1, 32, 32, 16)
    ids = tokenizer("<image>\nQuestion: Is there evidence of lesion? Answer: yes", return_tensors="pt")
    ids = ids["input_ids"]
    answer = len(tokenizer(" yes")["input_ids"])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -answer:] = ids[:, -answer:]
    out = model(volume, ids, labels=labels)
    # Manual: spliced logits, targets only at the answer positions (shifted by one).
    logits = model(volume, ids).logits[0]  # (L - 1 + K, V)
    k = model.num_visual_tokens
    total = ids.shape[1] - 1 + k
    positions = torch.arange(total - answer - 1, total - 1)
    expected = F.cross_entropy(logits[positions], ids[0, -answer:])
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    # Changing the prompt's labels to ignore does nothing; the image and prompt never enter the loss.
    assert model.num_visual_tokens == 8


def test_lora_trains_only_the_adapters_and_the_projector(tiny_lm_dir):
    lm, tokenizer, image_id = load_language_model(tiny_lm_dir)
    lm = apply_lora(lm, r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))
    model = create_model("tiny", language_model=lm, image_token_id=image_id, trainable_vision_blocks=0)
    base_before = {n: p.detach().clone() for n, p in lm.named_parameters() if "lora_" not in n}
    vision_before = {n: p.detach().clone() for n, p in model.vision.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = tokenizer("<image> A small lesion is seen on the left side.", return_tensors="pt")["input_ids"]
    model(torch.rand(1, 1, 32, 32, 16), ids, labels=ids).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(n.startswith("projector.") or "lora_" in n for n in with_grad)
    assert any("lora_B" in n for n in with_grad) and any(n.startswith("projector.") for n in with_grad)
    optimizer.step()
    for name, param in lm.named_parameters():
        if name in base_before:
            assert torch.equal(param, base_before[name]), name
    for name, param in model.vision.named_parameters():
        assert torch.equal(param, vision_before[name]), name


def test_partly_frozen_vision_trains_only_its_last_blocks(tiny_lm_dir):
    model, _ = tiny_vlm(tiny_lm_dir, trainable_vision_blocks=1)
    trainable = {n for n, p in model.vision.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.1.", "norm.")) for n in trainable)


def test_wrong_rank_volume_and_bad_variant_are_errors(tiny_lm_dir):
    model, tokenizer = tiny_vlm(tiny_lm_dir)
    ids = tokenizer("<image> hi", return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match="rank 4"):
        model(torch.rand(1, 32, 32, 16), ids)
    with pytest.raises(MedzooDataError, match="paper"):
        create_vision_encoder("huge")
    with pytest.raises(MedzooDataError, match="depht"):
        create_vision_encoder("tiny", depht=3)


def test_overfit_one_pair_then_save_load_generate_is_identical(tiny_lm_dir, tmp_path):
    from ct_vlm.data import format_prompt, tokenize_conversations
    from medzoo.weights import load_weights, save_weights

    torch.manual_seed(0)
    model, tokenizer = tiny_vlm(tiny_lm_dir)
    volume = torch.rand(1, 1, 32, 32, 16)
    report = "A small lesion is seen on the left side. No other findings."
    prompt = [format_prompt("Write the radiology report.")]
    batch = tokenize_conversations(tokenizer, prompt, [report], max_length=64)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(120):
        loss = model(volume, **batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    query = tokenize_conversations(tokenizer, prompt)
    ids = model.generate(volume, **query, max_new_tokens=40, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    assert tokenizer.decode(ids[0], skip_special_tokens=True).strip() == report

    # Save: the LM through save_pretrained, ViT + projector as safetensors; load through from_pretrained.
    model.language_model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    save_weights({k: v for k, v in model.state_dict().items() if not k.startswith("language_model.")},
                 tmp_path / "vision.safetensors")  # fmt: skip
    reloaded, tokenizer2 = tiny_vlm(tmp_path / "lm")
    missing, unexpected = reloaded.load_state_dict(
        load_weights(tmp_path / "vision.safetensors"), strict=False
    )
    assert not unexpected and all(k.startswith("language_model.") for k in missing)
    reloaded.eval()
    query2 = tokenize_conversations(tokenizer2, prompt)
    ids2 = reloaded.generate(volume, **query2, max_new_tokens=40, eos_token_id=tokenizer2.eos_token_id,
                             pad_token_id=tokenizer2.pad_token_id)  # fmt: skip
    assert torch.equal(ids, ids2)

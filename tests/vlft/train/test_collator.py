"""Labels come from the real chat template and cover exactly the assistant turns."""

from __future__ import annotations

import pytest

from vlft.models.loading import load_processor
from vlft.train.collator import (IGNORE_INDEX, SampleEncoder, SampleError, SftCollator, TemplateTokens,
                                 assistant_spans)

from train_helpers import TINY_PIXELS, caption_sample


def _msg(role, *parts):
    content = []
    for p in parts:
        content.append({"type": "text", "text": p} if isinstance(p, str) else {"type": "image", "image": str(p)})
    return {"role": role, "content": content}


def _samples(imgs):
    return {
        "single": {"id": "a", "messages": [_msg("user", imgs[0], "COCO Yes:"),
                                           _msg("assistant", "A dog on the grass.")]},
        "multi_turn": {"id": "b", "messages": [
            _msg("system", "You describe pictures."),
            _msg("user", imgs[0], "What is this?"), _msg("assistant", "A kitchen with a stove."),
            _msg("user", "And the colour?"), _msg("assistant", "Mostly white, 白色的墙。")]},
        "multi_image": {"id": "c", "messages": [
            _msg("user", imgs[0], imgs[1], "Compare the two images."),
            _msg("assistant", "The first is indoors; the second is outside."),
            _msg("user", imgs[2], "And this one?"), _msg("assistant", "A street.")]},
        "text_only": {"id": "d", "messages": [_msg("user", "Say hi"), _msg("assistant", "Hi!")]},
    }


@pytest.fixture(scope="module")
def qwen3_processor(tiny_model_dir):
    return load_processor(tiny_model_dir, max_pixels=TINY_PIXELS, min_pixels=32 * 32)


def _check_labels(processor, sample):
    enc = SampleEncoder(processor, max_length=4096)
    out = enc.encode(sample)
    ids, labels = out["input_ids"].tolist(), out["labels"].tolist()
    tok = processor.tokenizer
    expected = [m for m in sample["messages"] if m["role"] == "assistant"]
    # contiguous labelled runs, one per assistant turn, each decoding to text + <|im_end|>
    runs, cur = [], []
    for i, l in enumerate(labels):
        if l != IGNORE_INDEX:
            assert l == ids[i]
            cur.append(l)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    assert [tok.decode(r) for r in runs] == [m["content"][0]["text"] + "<|im_end|>" for m in expected]
    # nothing else: no image pads, no headers, no trailing newline
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert all(l != image_pad for l in labels)
    # the up-front length estimate (image headers only) equals the real encoded length
    assert enc.measure(sample) == len(ids)
    return out


@pytest.mark.parametrize("kind", ["single", "multi_turn", "multi_image", "text_only"])
def test_qwen3_labels_decode_to_assistant_text(qwen3_processor, coco_images, kind):
    _check_labels(qwen3_processor, _samples(coco_images)[kind])


@pytest.mark.parametrize("kind", ["single", "multi_turn", "multi_image"])
def test_qwen25_labels_decode_to_assistant_text(tiny_qwen25_dir, coco_images, kind):
    processor = load_processor(tiny_qwen25_dir, max_pixels=TINY_PIXELS, min_pixels=32 * 32)
    _check_labels(processor, _samples(coco_images)[kind])


def test_template_has_no_think_block_and_injected_one_is_masked(qwen3_processor):
    """The vendored Qwen3-VL-4B-Instruct template renders assistant text verbatim; Qwen3
    'thinking' templates add an empty <think> block to the last turn, which must stay unlabelled."""
    tok = qwen3_processor.tokenizer
    msgs = [_msg("user", "hi"), _msg("assistant", "Hello there.")]
    text = qwen3_processor.apply_chat_template(msgs, tokenize=False)
    assert "<think>" not in text and text.endswith("<|im_start|>assistant\nHello there.<|im_end|>\n")
    injected = text.replace("assistant\nHello", "assistant\n<think>\n\n</think>\n\nHello")
    ids = tok(injected, add_special_tokens=False)["input_ids"]
    tt = TemplateTokens.from_tokenizer(tok)
    (s, e), = assistant_spans(ids, tt, ["Hello there."], tok)
    assert tok.decode(ids[s:e]) == "Hello there.<|im_end|>"
    # a message that really contains a think block keeps it labelled
    (s, e), = assistant_spans(ids, tt, ["<think>\n\n</think>\n\nHello there."], tok)
    assert tok.decode(ids[s:e]).startswith("<think>")


def test_too_long_and_no_assistant_are_skipped_with_reasons(qwen3_processor, coco_images):
    enc = SampleEncoder(qwen3_processor, max_length=20)
    with pytest.raises(SampleError) as e:
        enc.measure(caption_sample(0, coco_images[0], "word " * 50))
    assert e.value.reason == "too_long"
    with pytest.raises(SampleError) as e:
        SampleEncoder(qwen3_processor, 512).measure({"id": "x", "messages": [_msg("user", "hi")]})
    assert e.value.reason == "no_assistant"


def test_batch_is_right_padded_with_images_concatenated(qwen3_processor, coco_images):
    s = _samples(coco_images)
    batch = SftCollator(qwen3_processor, 4096)([s["single"], s["multi_image"], s["text_only"]])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape and ids.shape[0] == 3
    pad = qwen3_processor.tokenizer.pad_token_id
    for row in range(3):
        n = int(mask[row].sum())
        assert mask[row, :n].all() and not mask[row, n:].any()      # right padding
        assert (ids[row, n:] == pad).all() and (labels[row, n:] == IGNORE_INDEX).all()
    assert batch["image_grid_thw"].shape == (4, 3)                   # 1 + 3 images, text-only adds none
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(-1).sum())
    n_pad_tokens = int((ids == qwen3_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert n_pad_tokens == int(batch["image_grid_thw"].prod(-1).sum()) // 4   # merge 2x2


def test_pad_to_multiple_keeps_rows_and_loss(qwen3_processor, coco_images, tiny_model_dir):
    """Padding up to a multiple (fewer shapes for compiled layers / CUDA graphs) only appends masked,
    unlabelled tokens: the same rows in front, the same loss."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vlft.train.fast import lm_loss

    s = _samples(coco_images)
    group = [s["single"], s["multi_turn"]]
    plain = SftCollator(qwen3_processor, 4096)(group)
    padded = SftCollator(qwen3_processor, 4096, pad_to_multiple_of=32)(group)
    w = plain["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] == -(-w // 32) * 32 > w
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(padded[key][:, :w], plain[key])
    assert not padded["attention_mask"][:, w:].any() and (padded["labels"][:, w:] == IGNORE_INDEX).all()
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(lm_loss(model, padded), lm_loss(model, plain))
        torch.testing.assert_close(model(**padded).loss, model(**plain).loss)


def _grads(model, batch, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("adapter", ["lora", "dora"])
def test_filler_rows_change_neither_loss_nor_gradients(qwen3_processor, coco_images, tiny_model_dir, adapter):
    """A short last batch padded to the planned batch size with filler rows (compiled layers: no new
    shape mid-run) trains exactly as the unpadded batch: same loss (fast and HF), same labelled-token
    count (the divisor num_items_in_batch under accumulation), same adapter gradients; images, grids
    and M-RoPE positions of the real rows are untouched."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vlft.adapters.methods import get_method
    from vlft.adapters.registry import AdapterSpec
    from vlft.train.collator import FILLER_ROWS_KEY
    from vlft.train.fast import lm_loss

    s = _samples(coco_images)
    group = [s["single"], s["multi_image"], s["text_only"]]
    plain = SftCollator(qwen3_processor, 4096, pad_to_multiple_of=32)(group)
    padded = SftCollator(qwen3_processor, 4096, pad_to_multiple_of=32, pad_rows_to=5)(group)
    assert padded.pop(FILLER_ROWS_KEY) == 2 and FILLER_ROWS_KEY not in plain
    assert padded["input_ids"].shape == (5, plain["input_ids"].shape[1])
    for key in plain:
        if key in ("pixel_values", "image_grid_thw"):
            assert torch.equal(padded[key], plain[key])  # filler rows carry no image
        else:
            assert torch.equal(padded[key][:3], plain[key])
    assert (padded["labels"][3:] == IGNORE_INDEX).all() and padded["attention_mask"][3:].sum() == 2
    # the labelled-token count the Trainer divides by (num_items_in_batch) is the same
    assert int((padded["labels"][:, 1:] != IGNORE_INDEX).sum()) == int((plain["labels"][:, 1:] != IGNORE_INDEX).sum())
    # a full batch gets none
    assert FILLER_ROWS_KEY not in SftCollator(qwen3_processor, 4096, pad_rows_to=3)(group)

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_method(adapter).build(base, AdapterSpec(targets="q_proj,v_proj", r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # non-zero B, so the adapter's gradients depend on every layer's input
        for n, p in model.named_parameters():
            if p.requires_grad and "lora_B" in n:
                p.normal_(0, 0.02)
    model.train()
    for loss_fn in (lambda m, b: lm_loss(m, b, chunk_size=0), lambda m, b: m(**b).loss):
        loss_p, grads_p = _grads(model, plain, loss_fn)
        loss_f, grads_f = _grads(model, padded, loss_fn)
        assert torch.isfinite(loss_f)
        torch.testing.assert_close(loss_f, loss_p)
        assert grads_f.keys() == grads_p.keys() and grads_p
        for name in grads_p:
            torch.testing.assert_close(grads_f[name], grads_p[name], msg=name)

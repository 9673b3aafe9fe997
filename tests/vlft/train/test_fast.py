"""The fast training path computes the same loss and gradients as the plain HF path (tiny model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.lab import packing  # padded/packed batches with precomputed positions (lab code)
from vlft.train import fast

CAPTIONS = ["A dog.", "Two people riding horses along a sandy beach at sunset near the water.",
            "A red bus parked on a busy street next to a tall building."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    from vlft.models.loading import load_processor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.use_cache = False
    processor = load_processor(tiny_model_dir)
    return model, processor


def _samples(model, processor, sizes=(64, 96, 64)):
    from PIL import Image

    tok = processor.tokenizer
    image_token = model.config.image_token_id
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    rope = packing.find_rope_index_fn(model)
    rng = np.random.default_rng(0)
    out = []
    for cap, size in zip(CAPTIONS, sizes):
        img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "COCO Yes:"}]}
        msgs = [user, {"role": "assistant", "content": [{"type": "text", "text": cap}]}]
        enc = processor(text=[processor.apply_chat_template(msgs, tokenize=False)], images=[img], return_tensors="pt")
        n_prompt = processor(text=[processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)],
                             images=[img], return_tensors="pt")["input_ids"].shape[1]
        ids = enc["input_ids"][0]
        labels = torch.full_like(ids, -100)
        end = int((ids[n_prompt:] == im_end).nonzero()[0]) + n_prompt + 1
        labels[n_prompt:end] = ids[n_prompt:end]
        s = {"input_ids": ids, "labels": labels, "pixel_values": enc["pixel_values"],
             "image_grid_thw": enc["image_grid_thw"]}
        s["position_ids"] = packing.rope_positions(rope, ids, s["image_grid_thw"], image_token)
        out.append(s)
    return out


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    g = {n: p.grad.detach().clone() for n, p in model.named_parameters()
         if p.grad is not None and "language_model" in n}
    model.zero_grad(set_to_none=True)
    return g


def _plain_loss(model, processor, samples):
    b = packing.collate_padded(samples, processor.tokenizer.pad_token_id)
    b.pop("position_ids")
    b["mm_token_type_ids"] = (b["input_ids"] == model.config.image_token_id).int()
    return model(**b, use_cache=False).loss


def _assert_close(ga, gb, rtol=1e-4):
    assert ga.keys() == gb.keys() and ga
    for n in ga:
        err = (ga[n] - gb[n]).norm() / gb[n].norm().clamp_min(1e-12)
        assert err < rtol, f"{n}: relative gradient error {err:.2e}"


@pytest.mark.parametrize("chunk", [0, 3, 1000])
def test_masked_lm_loss_equals_full_vocab_cross_entropy(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    head = torch.nn.Linear(16, 50, bias=False)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :4] = -100
    labels[1, 6:] = -100
    ref = F.cross_entropy(head(hidden)[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=-100)
    ref_g = torch.autograd.grad(ref, [hidden, head.weight])
    got = fast.masked_lm_loss(hidden, head, labels, chunk_size=chunk)
    got_g = torch.autograd.grad(got, [hidden, head.weight])
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(got_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fast_loss_equals_hf_loss_on_padded_batch(tiny):
    model, processor = tiny
    model.train()
    samples = _samples(model, processor)
    ref = _plain_loss(model, processor, samples)
    ref_g = _grads(model, ref)
    batch = packing.collate_padded(samples, processor.tokenizer.pad_token_id)
    got = fast.lm_loss(model, batch, chunk_size=4)
    got_g = _grads(model, got)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    _assert_close(got_g, ref_g)


@pytest.mark.parametrize("rows", ["one", "several"])
def test_packed_batch_equals_unpacked(tiny, rows):
    model, processor = tiny
    model.train()
    samples = _samples(model, processor)
    lens = [s["input_ids"].numel() for s in samples]
    max_tokens = None if rows == "one" else max(lens) + min(lens) - 1  # two rows, one with padding
    ref = _plain_loss(model, processor, samples)
    ref_g = _grads(model, ref)
    packed = packing.pack_batch(samples, processor.tokenizer.pad_token_id, max_tokens=max_tokens)
    if max_tokens is None:
        assert packed["input_ids"].shape[0] == 1
    else:
        assert packed["input_ids"].shape[0] > 1 and packed["input_ids"].shape[1] <= max_tokens
    got = fast.lm_loss(model, packed)
    got_g = _grads(model, got)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    _assert_close(got_g, ref_g)


def test_pack_keeps_per_sample_positions_and_image_order(tiny):
    model, processor = tiny
    samples = _samples(model, processor)
    packed = packing.pack_batch(samples, processor.tokenizer.pad_token_id)
    at = 0
    for s in samples:
        n = s["input_ids"].numel()
        torch.testing.assert_close(packed["position_ids"][1:, 0, at:at + n], s["position_ids"])
        torch.testing.assert_close(packed["position_ids"][0, 0, at:at + n], torch.arange(n))
        at += n
    torch.testing.assert_close(packed["pixel_values"], torch.cat([s["pixel_values"] for s in samples]))
    # M-RoPE positions of image tokens are 3-D (not a plain arange): the model's own function made them
    img = samples[0]["input_ids"] == model.config.image_token_id
    assert not torch.equal(samples[0]["position_ids"][1, img], samples[0]["position_ids"][2, img])


def test_plan_rows_fits_and_rejects_overlong():
    rows = packing.plan_rows([5, 4, 3, 6], max_tokens=8)
    assert all(sum([5, 4, 3, 6][i] for i in r) <= 8 for r in rows)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="exceed"):
        packing.plan_rows([9], max_tokens=8)


def test_selective_checkpointing_same_gradients(tiny):
    model, processor = tiny
    model.train()
    samples = _samples(model, processor)
    batch = packing.collate_padded(samples, processor.tokenizer.pad_token_id)
    try:
        assert fast.set_checkpointing(model, 0) == 0
        ref_g = _grads(model, fast.lm_loss(model, batch))
        assert fast.set_checkpointing(model, 2) == 1  # tiny model: 2 layers -> layer 0 only
        got_g = _grads(model, fast.lm_loss(model, batch))
    finally:
        fast.set_checkpointing(model, 0)
    _assert_close(got_g, ref_g, rtol=1e-5)


def test_lm_loss_on_the_training_collator_batch(tiny):
    """Drop-in for the Trainer's compute_loss: same value as model(**batch).loss on SftCollator output."""
    from PIL import Image

    from vlft.train.collator import SftCollator

    model, processor = tiny
    model.train()
    rng = np.random.default_rng(1)
    records = [{"id": str(i), "messages": [
        {"role": "user", "content": [{"type": "image", "image": Image.fromarray(
            rng.integers(0, 256, (64, 64 + 32 * i, 3), dtype=np.uint8))}, {"type": "text", "text": "COCO Yes:"}]},
        {"role": "assistant", "content": [{"type": "text", "text": cap}]}]} for i, cap in enumerate(CAPTIONS)]
    batch = SftCollator(processor, max_length=512)(records)
    ref = model(**batch, use_cache=False).loss
    ref_g = _grads(model, ref)
    got = fast.lm_loss(model, batch, chunk_size=8)
    got_g = _grads(model, got)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    _assert_close(got_g, ref_g)
    # frozen vision tower (the training default): features under no_grad, positions still from the grid
    frozen = fast.lm_loss(model, batch, chunk_size=8, vision_no_grad=True)
    torch.testing.assert_close(frozen, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # inductor compiles on the CPU: 1-2 min
@pytest.mark.parametrize("adapter", ["lora", "moelora"])
def test_compiled_layers_same_loss_and_gradients(tiny_model_dir, tiny, adapter):
    """Compiled decoder layers, the partitioner recomputing everything (the CUDA default of
    lora.py / MoeLORA.py), equal the eager checkpointed path: loss and adapter gradients, with the
    MoE-LoRA router-loss gradient applied inside each layer's backward. Real inductor on the CPU."""
    import torch._dynamo
    from transformers import AutoModelForImageTextToText

    from vlft.adapters.registry import AdapterSpec, apply_adapter
    from vlft.train.config import MoeLoraOptions

    _, processor = tiny
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.use_cache = False
    torch.manual_seed(0)
    spec = AdapterSpec(targets="q_proj,k_proj,v_proj,o_proj", r=4, alpha=8, dropout=0.0,
                       options=MoeLoraOptions(num_experts=4, top_k=2, router_aux_loss_coef=0.1))
    model = apply_adapter(model, adapter, spec).train()
    with torch.no_grad():  # B = 0 at init would hide expert/LoRA-B errors
        for n, p in model.named_parameters():
            if p.requires_grad and ("lora_B" in n or "lora_expert_B" in n):
                p.normal_(0, 0.05)
    batch = packing.collate_padded(_samples(model, processor), processor.tokenizer.pad_token_id)
    fast.set_checkpointing(model, 1)
    ref_loss = fast.lm_loss(model, batch)
    ref_g = _grads(model, ref_loss)
    fast.set_checkpointing(model, 0)
    torch._dynamo.reset()
    try:
        assert fast.compile_decoder_layers(model, memory_budget=0.0) == 2
        for _ in range(2):  # the second call runs the cached graphs
            loss = fast.lm_loss(model, batch)
            got_g = _grads(model, loss)
            torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
            _assert_close(got_g, ref_g, rtol=1e-4)
        if adapter == "moelora":
            assert any("router" in n for n in got_g)
    finally:
        fast.uncompile_decoder_layers(model)
        torch._dynamo.reset()


def test_compile_refuses_checkpointed_layers_and_bad_budget(tiny):
    model, _ = tiny
    try:
        fast.set_checkpointing(model, 1)
        with pytest.raises(ValueError, match="checkpointing"):
            fast.compile_decoder_layers(model)
    finally:
        fast.set_checkpointing(model, 0)
    with pytest.raises(ValueError, match="memory_budget"):
        fast.compile_decoder_layers(model, memory_budget=2.0)
    assert fast.compile_available("cpu")[0] is False


class _PoolGrad(torch.autograd.Function):
    """Like a CUDA-graph backward: the weight gradient is written into the same memory at every
    call, and autograd gets a fresh view of it (so it may keep it as ``.grad`` without a copy)."""

    pool = torch.zeros(3)

    @staticmethod
    def forward(ctx, w, value):
        ctx.value = value
        return w.sum()

    @staticmethod
    def backward(ctx, grad_out):
        _PoolGrad.pool.fill_(ctx.value)
        return _PoolGrad.pool.view_as(_PoolGrad.pool), None


@pytest.mark.parametrize("hooked", [False, True])
def test_own_first_grad_keeps_accumulated_grads_out_of_reused_memory(hooked):
    """Two micro-steps' gradients, 1 and 2, must accumulate to 3; without the hook the stored
    .grad is the reused memory and the second write doubles it (what CUDA graphs did in run 17)."""
    from vlft.train.fast.compile import keep_grads_out_of_graph_pool

    w = torch.nn.Parameter(torch.zeros(3))
    model = torch.nn.Module()
    model.w = w
    handles = keep_grads_out_of_graph_pool(model) if hooked else []
    for value in (1.0, 2.0):
        _PoolGrad.apply(w, value).backward()
    expected = torch.full((3,), 3.0)
    assert torch.equal(w.grad, expected) == hooked
    assert (w.grad.data_ptr() != _PoolGrad.pool.data_ptr()) == hooked
    for h in handles:
        h.remove()

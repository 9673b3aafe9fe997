"""MoE-LoRA on the tiny real Qwen3-VL (CPU): equivalence to PEFT LoRA, learning, save/load, 4-bit."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vlft.config import ConfigError
from vlft.tuners.moelora import (
    AdapterLoadError,
    MoeLoraConfig,
    MoeLoraLinear,
    RoutingContext,
    apply_moelora,
    count_trainable,
    expected_trainable_params,
    is_moelora_dir,
    load_moelora,
    aux_in_backward,
    moelora_aux_loss,
    set_moelora_aux,
    moelora_disabled,
    moelora_layers,
    moelora_stats,
    moelora_summary,
    save_moelora,
    set_moelora_stats,
)

LM_TARGETS = ["q_proj", "v_proj"]
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "attn.qkv", "attn.proj", "mlp.linear_fc1",
               "mlp.linear_fc2"]


def load_base(model_dir, **kw):
    from transformers import AutoModelForImageTextToText
    return AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, **kw)


@pytest.fixture(scope="module")
def batch(tiny_model_dir, coco_sample_dir):
    """One real image + caption through the real processor, and a left-padded second row."""
    from PIL import Image

    from vlft.models.loading import load_processor
    proc = load_processor(tiny_model_dir)
    img = Image.open(sorted((coco_sample_dir / "images").glob("*.jpg"))[0]).convert("RGB")
    msgs = [[{"role": "user", "content": [{"type": "image", "image": img},
                                          {"type": "text", "text": "COCO Yes:"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "A dog on a sofa."}]}],
            [{"role": "user", "content": [{"type": "image", "image": img},
                                          {"type": "text", "text": "Describe it."}]}]]
    text = [proc.apply_chat_template(m, tokenize=False) for m in msgs]
    enc = proc(text=text, images=[img, img], return_tensors="pt", padding=True)
    assert (enc["attention_mask"] == 0).any(), "the batch must contain padding"
    enc = dict(enc)
    enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc


def randomize_B(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in moelora_layers(model).values():
            m.lora_expert_B.copy_(torch.randn(m.lora_expert_B.shape, generator=g) * 0.05)


# -- layer-level ----------------------------------------------------------------------------------
def naive_moelora(layer: MoeLoraLinear, x: torch.Tensor) -> torch.Tensor:
    """Reference: loop over tokens and their selected experts (test only)."""
    E, r, k = layer.num_experts, layer.r, layer.top_k
    A = layer.lora_expert_A.view(E, r, -1)                 # (E, r, in)
    B = layer.lora_expert_B.view(-1, E, r).permute(1, 0, 2)  # (E, out, r)
    flat = x.reshape(-1, x.shape[-1])
    out = []
    for tok in flat:
        probs = torch.softmax(layer.lora_router(tok).float(), -1)
        top_p, top_i = probs.topk(k)
        w = top_p / top_p.sum()
        y = layer.base_layer(tok)
        for wi, e in zip(w, top_i.tolist()):
            y = y + wi * layer.scaling * (B[e] @ (A[e] @ tok))
        out.append(y)
    return torch.stack(out).view(*x.shape[:-1], -1)


@pytest.mark.parametrize("E,k", [(4, 2), (4, 1), (3, 3), (1, 1)])
def test_batched_equals_naive_per_expert_loop(E, k):
    torch.manual_seed(0)
    layer = MoeLoraLinear(nn.Linear(16, 12), r=4, lora_alpha=8, num_experts=E, top_k=k, router_init_scale=3.0)
    with torch.no_grad():
        layer.lora_expert_B.normal_()
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(layer(x), naive_moelora(layer, x), rtol=1e-5, atol=1e-5)


def test_aux_loss_matches_switch_formula_and_ignores_padding():
    torch.manual_seed(0)
    ctx = RoutingContext()
    layer = MoeLoraLinear(nn.Linear(8, 8), r=2, lora_alpha=2, num_experts=4, top_k=2, router_init_scale=3.0,
                          context=ctx).train()
    x = torch.randn(2, 6, 8)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :3] = 0                                          # left padding in row 1
    ctx.set_mask(mask)
    layer(x)
    real = x[mask.bool()]                                    # (9, 8) the unpadded tokens
    probs = torch.softmax(layer.lora_router(real), -1)
    sel = torch.zeros_like(probs).scatter(-1, probs.topk(2, -1).indices, 1.0)
    f, P = sel.mean(0) / 2, probs.mean(0)
    torch.testing.assert_close(layer.aux_loss, 4 * (f * P).sum())
    torch.testing.assert_close(layer.load_fraction, f)
    assert abs(layer.load_fraction.sum().item() - 1) < 1e-6
    ent = -(probs * probs.log()).sum(-1).mean()
    torch.testing.assert_close(layer.router_entropy, ent)
    # A mask of another shape (e.g. vision patches) is ignored: every token counts.
    ctx.set_mask(torch.ones(3, 3))
    layer(x)
    probs = torch.softmax(layer.lora_router(x.reshape(-1, 8)), -1)
    sel = torch.zeros_like(probs).scatter(-1, probs.topk(2, -1).indices, 1.0)
    torch.testing.assert_close(layer.aux_loss, 4 * (sel.mean(0) / 2 * probs.mean(0)).sum())


def test_aux_loss_alone_rebalances_a_collapsed_router():
    """Learning check: descending the Switch loss spreads tokens that all went to one expert."""
    torch.manual_seed(0)
    layer = MoeLoraLinear(nn.Linear(16, 16), r=2, lora_alpha=4, num_experts=4, top_k=1,
                          router_init_scale=1.0).train()
    with torch.no_grad():
        layer.lora_router.weight[0] += 0.5                  # expert 0 wins almost every token
    x = torch.randn(512, 16) + 1.0
    opt = torch.optim.Adam(layer.lora_router.parameters(), lr=0.05)
    layer(x)
    first_aux, first_max = layer.aux_loss.item(), layer.load_fraction.max().item()
    for _ in range(60):
        layer(x)
        opt.zero_grad()
        layer.aux_loss.backward()
        opt.step()
    layer(x)
    assert first_max > 0.9 and first_aux > 3.0
    assert layer.aux_loss.item() < 1.2 and layer.load_fraction.max().item() < 0.45


def test_starts_equal_to_base_and_bf16_input_keeps_dtype():
    base = nn.Linear(16, 8).to(torch.bfloat16)
    layer = MoeLoraLinear(base, r=4, lora_alpha=8, num_experts=4, top_k=2)
    assert layer.lora_expert_A.dtype == torch.float32        # adapter in fp32 over a bf16 base
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, base(x))                    # B = 0 at init


# -- on the tiny Qwen3-VL ------------------------------------------------------------------------
def test_one_expert_top1_equals_peft_lora(tiny_model_dir, batch):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "v_proj", "attn.qkv", "mlp.linear_fc2"]
    ours = apply_moelora(load_base(tiny_model_dir), MoeLoraConfig(
        r=4, lora_alpha=8, num_experts=1, top_k=1, target_modules=targets))
    randomize_B(ours)
    peft = get_peft_model(load_base(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                                target_modules=targets))
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in peft.named_modules()
                   if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
    layers = moelora_layers(ours)
    assert set(layers) == set(peft_layers) and len(layers) == 8
    with torch.no_grad():
        for n, m in layers.items():
            peft_layers[n].lora_A["default"].weight.copy_(m.lora_expert_A)
            peft_layers[n].lora_B["default"].weight.copy_(m.lora_expert_B)
    ours.eval(), peft.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        a, b = ours(**inputs).logits, peft(**inputs).logits
        with moelora_disabled(ours):
            base = ours(**inputs).logits
    assert not torch.allclose(a, base, atol=1e-4), "the adapters must change the output"
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_training_router_grads_and_aux_loss_in_loss(tiny_model_dir, batch):
    torch.manual_seed(0)
    cfg = MoeLoraConfig(r=4, lora_alpha=8, num_experts=4, top_k=2, target_modules=ALL_TARGETS,
                        router_aux_loss_coef=0.5)
    model = apply_moelora(load_base(tiny_model_dir), cfg).train()
    assert aux_in_backward(model)  # default with a coefficient: gradient applied per layer in backward
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-3)
    losses = []
    for _ in range(8):
        out = model(**batch)
        aux = moelora_aux_loss(model)
        assert not aux.requires_grad and 0.99 < aux.item() < float(cfg.num_experts)  # logged value
        opt.zero_grad()
        out.loss.backward()
        routers = [m.lora_router.weight.grad for m in moelora_layers(model).values()]
        assert all(g is not None for g in routers)
        opt.step()
        losses.append(out.loss.item())
    assert all(g.abs().sum() > 0 for g in routers), "every router gets a gradient once B != 0"
    assert losses[-1] < losses[0] - 0.5, f"loss should fall on one repeated batch: {losses}"

    # Old way (coef 0 in the tuner): the aux term reaches the routers through the graph the
    # caller backpropagates, and total gradient = LM part + coef * aux part.
    set_moelora_aux(model, 0.0)
    model.zero_grad()
    model(**batch)
    moelora_aux_loss(model).backward()
    assert all(m.lora_router.weight.grad.abs().sum() > 0 for m in moelora_layers(model).values())
    aux_grad = [m.lora_router.weight.grad.clone() for m in moelora_layers(model).values()]
    model.zero_grad()
    out = model(**batch)
    out.loss.backward(retain_graph=True)
    lm_grad = [m.lora_router.weight.grad.clone() for m in moelora_layers(model).values()]
    moelora_aux_loss(model).mul(cfg.router_aux_loss_coef).backward()
    for m, g_lm, g_aux in zip(moelora_layers(model).values(), lm_grad, aux_grad):
        torch.testing.assert_close(m.lora_router.weight.grad, g_lm + cfg.router_aux_loss_coef * g_aux)

    stats = moelora_stats(model)
    assert {"moe/aux_loss", "moe/entropy", "moe/load_max", "moe/lm.self_attn.q_proj/load_e3",
            "moe/vision.attn.qkv/entropy"} <= set(stats)
    for g in ("lm.self_attn.q_proj", "vision.mlp.linear_fc1"):
        assert abs(sum(stats[f"moe/{g}/load_e{e}"] for e in range(4)) - 1) < 1e-5
    assert 0 < stats["moe/entropy"] <= torch.log(torch.tensor(4.0)).item() + 1e-6
    assert set(moelora_stats(model, by="layer")) >= {"moe/lm.0/entropy", "moe/vision.1/load_e0"}


def test_gradient_checkpointing_keeps_aux_gradient(tiny_model_dir, batch):
    model = apply_moelora(load_base(tiny_model_dir), MoeLoraConfig(r=4, target_modules=LM_TARGETS)).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    randomize_B(model)
    out = model(**batch)
    (out.loss + 0.01 * moelora_aux_loss(model)).backward()
    for m in moelora_layers(model).values():
        assert m.lora_router.weight.grad.abs().sum() > 0 and m.lora_expert_A.grad.abs().sum() > 0


def _adapter_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "ckpt-nonreentrant"])
def test_aux_gradient_in_backward_equals_summed_aux_loss(tiny_model_dir, batch, checkpointing):
    """In-backward aux gradient (default) == gradient of lm_loss + coef * moelora_aux_loss (old way),
    for routers and experts, with and without non-reentrant checkpointing; also with a backward
    scale (gradient accumulation) applied to both the LM loss and the aux gradient."""
    coef = 0.3
    cfg = MoeLoraConfig(r=4, num_experts=4, top_k=2, target_modules=ALL_TARGETS, router_aux_loss_coef=coef,
                        init_seed=1)
    grads, auxes = {}, {}
    for mode in ("summed", "in_backward", "scaled"):
        model = apply_moelora(load_base(tiny_model_dir), cfg).train()
        randomize_B(model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if mode == "summed":
            set_moelora_aux(model, 0.0)
            out = model(**batch)
            aux = moelora_aux_loss(model)
            assert aux.requires_grad
            (out.loss + coef * aux).backward()
        elif mode == "in_backward":
            out = model(**batch)
            aux = moelora_aux_loss(model)
            assert not aux.requires_grad
            out.loss.backward()
        else:  # both parts scaled by 1/4, e.g. 4 accumulation steps
            set_moelora_aux(model, grad_scale=lambda: 0.25)
            out = model(**batch)
            aux = moelora_aux_loss(model)
            (out.loss * 0.25).backward()
            for p in model.parameters():
                if p.grad is not None:
                    p.grad *= 4
        auxes[mode], grads[mode] = aux.item(), _adapter_grads(model)
    assert len(grads["summed"]) == 3 * len(moelora_layers(model))  # A, B, router of every layer
    assert any("router" in n and g.abs().sum() > 0 for n, g in grads["summed"].items())
    for mode in ("in_backward", "scaled"):
        assert auxes[mode] == pytest.approx(auxes["summed"], rel=1e-6)
        assert grads[mode].keys() == grads["summed"].keys()
        for n, g in grads["summed"].items():
            torch.testing.assert_close(grads[mode][n], g, rtol=1e-5, atol=1e-7, msg=f"{mode}: {n}")


def test_save_load_fresh_base_identical_logits(tiny_model_dir, batch, tmp_path):
    cfg = MoeLoraConfig(r=4, lora_alpha=8, num_experts=3, top_k=2, target_modules=ALL_TARGETS, init_seed=1)
    model = apply_moelora(load_base(tiny_model_dir), cfg)
    randomize_B(model)
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        ref = model(**inputs).logits
    out = save_moelora(model, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert is_moelora_dir(out) and not is_moelora_dir(tmp_path)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["peft_type"] == "MOELORA" and meta["moelora_version"] == 1 and meta["num_experts"] == 3
    assert meta["base_model_name_or_path"] == str(tiny_model_dir)
    from safetensors.torch import load_file
    keys = load_file(str(out / "adapter_model.safetensors"))
    n_layers = len(moelora_layers(model))
    assert len(keys) == 3 * n_layers and all(k.startswith("base_model.model.") for k in keys)

    fresh = load_moelora(load_base(tiny_model_dir), out)
    assert not fresh.training and count_trainable(fresh)[0] == 0
    with torch.no_grad():
        got = fresh(**inputs).logits
    assert torch.equal(ref, got)
    trainable = load_moelora(load_base(tiny_model_dir), out, is_trainable=True)
    assert count_trainable(trainable)[0] == expected_trainable_params(cfg, moelora_layers(trainable).values())


def test_load_onto_mismatched_base_fails_with_one_line(tiny_model_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    model = apply_moelora(load_base(tiny_model_dir), MoeLoraConfig(r=4, target_modules=LM_TARGETS))
    out = save_moelora(model, tmp_path / "adapter")
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.text_config.num_key_value_heads = 1                       # v_proj: 64 -> 16 outputs
    other = AutoModelForImageTextToText.from_config(cfg, dtype=torch.float32)
    with pytest.raises(AdapterLoadError) as e:
        load_moelora(other, out)
    msg = str(e.value)
    assert "\n" not in msg and str(out) in msg and "model.language_model.layers.0.self_attn.v_proj" in msg
    assert "(32, 16) in the adapter" in msg and "needs (16, 16)" in msg

    # A missing tensor is named too.
    from safetensors.torch import load_file, save_file
    sd = load_file(str(out / "adapter_model.safetensors"))
    dropped = "base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_router.weight"
    del sd[dropped]
    save_file(sd, str(out / "adapter_model.safetensors"))
    base = load_base(tiny_model_dir)
    with pytest.raises(AdapterLoadError, match=f"{dropped} is missing"):
        load_moelora(base, out)
    assert not moelora_layers(base), "a failed load leaves the base model unwrapped"


def test_trainable_count_equals_formula(tiny_model_dir):
    cfg = MoeLoraConfig(r=8, num_experts=4, top_k=2, target_modules=ALL_TARGETS)
    base = load_base(tiny_model_dir)
    linears = [m for n, m in base.named_modules()
               if isinstance(m, nn.Linear) and any(n.endswith("." + t) for t in ALL_TARGETS)]
    expected = sum(4 * 8 * (m.in_features + m.out_features) + m.in_features * 4 for m in linears)
    model = apply_moelora(base, cfg)
    assert count_trainable(model)[0] == expected == expected_trainable_params(cfg, linears)
    assert expected_trainable_params(cfg, [(2560, 4096)]) == 4 * 8 * (2560 + 4096) + 2560 * 4
    assert f"trainable params: {expected:,}" in moelora_summary(model)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_4bit_base_forward_backward_and_reload(tiny_model_dir, batch, tmp_path):
    import bitsandbytes as bnb

    from vlft.models.loading import load_model, resolve_precision
    prec = resolve_precision(quant="4bit", device="cpu")
    model = load_model(tiny_model_dir, prec)
    cfg = MoeLoraConfig(r=4, num_experts=4, top_k=2, target_modules=LM_TARGETS + ["o_proj"])
    apply_moelora(model, cfg).train()
    layers = moelora_layers(model)
    assert all(isinstance(m.base_layer, bnb.nn.Linear4bit) for m in layers.values())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        out = model(**batch)
        loss = out.loss + 0.01 * moelora_aux_loss(model)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(m.lora_expert_A.grad.abs().sum() > 0 and m.lora_router.weight.grad.abs().sum() > 0
               for m in layers.values())
    assert count_trainable(model)[0] == expected_trainable_params(cfg, layers.values())
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        ref = model(**inputs).logits
    save_moelora(model, tmp_path / "q")
    fresh = load_moelora(load_model(tiny_model_dir, prec), tmp_path / "q")
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs).logits, ref)


def test_target_matching_nothing_raises(tiny_model_dir):
    base = load_base(tiny_model_dir)
    with pytest.raises(ConfigError) as e:
        apply_moelora(base, MoeLoraConfig(target_modules=["q_proj", "visual_q_proj"]))
    msg = str(e.value)
    assert "'visual_q_proj'" in msg and "model.language_model.layers.N.self_attn.q_proj" in msg
    assert "model.visual.blocks.N.attn.qkv" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="matches no Linear"):
        apply_moelora(base, MoeLoraConfig(target_modules=r".*\.nothing_here"))
    assert not any(p.requires_grad is False for p in base.parameters()), "failed apply leaves model as is"


def test_target_forms_regex_all_linear_exclude(tiny_model_dir):
    base = load_base(tiny_model_dir)
    from vlft.tuners.moelora import find_target_modules
    rx = find_target_modules(base, r"model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj")
    assert rx == find_target_modules(base, ["q_proj", "v_proj"]) and len(rx) == 4
    everything = find_target_modules(base, "all-linear", exclude_modules=r".*visual.*")
    assert "lm_head" not in everything and not any("visual" in n for n in everything)
    assert len(everything) == 2 * 7                          # q,k,v,o,gate,up,down per text layer
    assert MoeLoraConfig(target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]


def test_config_validation_and_roundtrip(tmp_path):
    with pytest.raises(ConfigError, match="top_k"):
        MoeLoraConfig(num_experts=2, top_k=3, target_modules=["q_proj"])
    with pytest.raises(ConfigError, match="target_modules"):
        MoeLoraConfig()
    cfg = MoeLoraConfig(r=16, num_experts=8, top_k=2, target_modules=["v_proj", "q_proj"], init_seed=3)
    cfg.save(tmp_path)
    assert MoeLoraConfig.load(tmp_path) == cfg.replace(target_modules=["q_proj", "v_proj"])
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    assert not is_moelora_dir(tmp_path)
    with pytest.raises(ConfigError, match="PeftModel.from_pretrained"):
        MoeLoraConfig.load(tmp_path)


def test_stats_toggle_and_eval_records_nothing(tiny_model_dir, batch):
    model = apply_moelora(load_base(tiny_model_dir), MoeLoraConfig(r=4, target_modules=LM_TARGETS))
    set_moelora_stats(model, enabled=False)
    model.train()
    out = model(**batch)
    # stats off: nothing read back (no aux value either), but the aux gradient is still applied in
    # backward: with B = 0 at init the LM loss gives the routers no gradient, so all of it is aux
    assert moelora_stats(model) == {} and moelora_aux_loss(model) is None
    out.loss.backward()
    assert all(m.lora_router.weight.grad.abs().sum() > 0 for m in moelora_layers(model).values())
    set_moelora_stats(model, every=3)                 # forwards 2, 3, 4 -> only the 3rd records
    seen = []
    for _ in range(3):
        model(**batch)
        seen.append((bool(moelora_stats(model)), moelora_aux_loss(model) is not None))
    assert seen == [(False, False), (True, True), (False, False)]  # each forward clears the last one's
    model(**batch)
    model(**batch)                                    # the 6th: records again
    assert 0.99 < moelora_aux_loss(model).item() < 4
    model.eval()
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"})
    assert moelora_aux_loss(model) is None and moelora_stats(model) == {}


def test_mask_fixed_address_for_compiled_layers_fresh_for_eager(tiny_model_dir, batch):
    """Compiled layers read the mask from tensors whose address never changes for one batch shape
    (else CUDA graphs re-record every step); eager layers get fresh ones, so two forwards before
    one backward (each graph keeps its own mask) give the same gradients as two backwards."""
    model = apply_moelora(load_base(tiny_model_dir), MoeLoraConfig(r=4, target_modules=LM_TARGETS,
                                                                   router_aux_loss_coef=0.1)).train()
    randomize_B(model)
    ctx = next(iter(moelora_layers(model).values())).context
    other = dict(batch, attention_mask=batch["attention_mask"].clone())
    other["attention_mask"][0, :3] = 0
    model(**batch)
    ptrs = [t.data_ptr() for t in ctx._static]
    for b in (other, batch):
        model(**b)
        assert [t.data_ptr() for t in ctx._static] == ptrs
        torch.testing.assert_close(ctx._static[0].view(b["attention_mask"].shape), b["attention_mask"].float())
        assert ctx._static[1].item() == pytest.approx(1 / b["attention_mask"].sum().item())
    assert ctx._flat[0].data_ptr() != ptrs[0]

    model.zero_grad()
    (model(**batch).loss + model(**other).loss).backward()
    together = _adapter_grads(model)
    model.zero_grad()
    model(**batch).loss.backward()
    model(**other).loss.backward()
    for n, g in _adapter_grads(model).items():
        torch.testing.assert_close(together[n], g, rtol=1e-5, atol=1e-7, msg=n)


# -- PEFT registration (LoraConfig._register_custom_module) -------------------------------------
def test_peft_from_pretrained_loads_our_folder_and_vice_versa(tiny_model_dir, batch, tmp_path):
    from peft import PeftModel

    from vlft.tuners.moelora.peft_compat import (
        PeftMoeLoraLinear,
        get_moelora_peft_model,
        moelora_from_pretrained,
    )

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    cfg = MoeLoraConfig(r=4, lora_alpha=8, num_experts=4, top_k=2,
                        target_modules=["q_proj", "v_proj", "attn.qkv"])
    ours = apply_moelora(load_base(tiny_model_dir), cfg)
    randomize_B(ours)
    ours.eval()
    with torch.no_grad():
        ref = ours(**inputs).logits
    save_moelora(ours, tmp_path / "ours")
    # Plain PEFT refuses the folder instead of loading it as plain LoRA.
    with pytest.raises(KeyError, match="MOELORA"):
        PeftModel.from_pretrained(load_base(tiny_model_dir), str(tmp_path / "ours"))
    pm = moelora_from_pretrained(load_base(tiny_model_dir), tmp_path / "ours")
    assert isinstance(pm, PeftModel) and sum(isinstance(m, PeftMoeLoraLinear) for m in pm.modules()) == 6
    with torch.no_grad():
        torch.testing.assert_close(pm(**inputs).logits, ref, rtol=0, atol=0)

    # Train through PEFT: aux loss reaches the PEFT layers' routers, PEFT saves, our loader reads it.
    pm = get_moelora_peft_model(load_base(tiny_model_dir), cfg)
    pm.train()
    linears = [m.get_base_layer() for m in pm.modules() if isinstance(m, PeftMoeLoraLinear)]
    assert count_trainable(pm)[0] == expected_trainable_params(cfg, linears)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        out = pm(**batch)
        (out.loss + 0.01 * moelora_aux_loss(pm)).backward()
        opt.step()
        opt.zero_grad()
    assert "moe/lm.self_attn.q_proj/load_e0" in moelora_stats(pm)
    pm.eval()
    with torch.no_grad():
        ref = pm(**inputs).logits
    pm.save_pretrained(tmp_path / "peft")
    assert is_moelora_dir(tmp_path / "peft")
    back = load_moelora(load_base(tiny_model_dir), tmp_path / "peft")
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs).logits, ref, rtol=0, atol=0)


def test_modules_to_save_and_router_bias_roundtrip(tiny_model_dir, batch, tmp_path):
    cfg = MoeLoraConfig(r=2, num_experts=2, top_k=1, target_modules=LM_TARGETS, router_bias=True,
                        modules_to_save=["visual.merger"])
    model = apply_moelora(load_base(tiny_model_dir), cfg)
    layers = moelora_layers(model)
    merger = sum(p.numel() for p in model.model.visual.merger.parameters())
    assert count_trainable(model)[0] == expected_trainable_params(cfg, layers.values()) + merger
    assert expected_trainable_params(cfg, [(64, 64)]) == 2 * 2 * 128 + 64 * 2 + 2   # +E for the bias
    randomize_B(model)
    with torch.no_grad():
        model.model.visual.merger.linear_fc2.weight.mul_(1.5)
        for m in layers.values():
            m.lora_router.bias.normal_()
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        ref = model(**inputs).logits
    save_moelora(model, tmp_path / "a")
    fresh = load_moelora(load_base(tiny_model_dir), tmp_path / "a")
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, ref)


def _toy(seed=0, width=8):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 5))


def test_init_seed_is_deterministic_and_any_module_works(tmp_path):
    cfg = MoeLoraConfig(r=2, num_experts=3, top_k=2, target_modules=["0", "2"], init_seed=7)
    a, b = apply_moelora(_toy(), cfg), apply_moelora(_toy(), cfg)
    torch.manual_seed(123)  # the global RNG does not matter with init_seed
    c = apply_moelora(_toy(), cfg)
    sa, sb, sc = (moelora_state_dict_values(m) for m in (a, b, c))
    for x, y, z in zip(sa, sb, sc):
        assert torch.equal(x, y) and torch.equal(x, z)
    with pytest.raises(ValueError, match="already has MoE-LoRA"):
        apply_moelora(a, cfg)
    save_moelora(a, tmp_path / "toy")
    other = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.ReLU())       # "2" is not a Linear here
    with pytest.raises(AdapterLoadError, match=r"module 2 is not a Linear"):
        load_moelora(other, tmp_path / "toy")
    assert not any(isinstance(m, MoeLoraLinear) for m in other.modules()), "failed load wraps nothing"
    wider = _toy(width=9)
    with pytest.raises(AdapterLoadError, match=r"0\.lora_expert_B has shape \(8, 6\) .* needs \(9, 6\)"):
        load_moelora(wider, tmp_path / "toy")
    assert not any(isinstance(m, MoeLoraLinear) for m in wider.modules())


def moelora_state_dict_values(model):
    from vlft.tuners.moelora import moelora_state_dict
    return list(moelora_state_dict(model).values())


def test_op_count_does_not_grow_with_experts():
    """Batched experts: the same aten ops (~GPU kernels) per forward+backward for E=2 and E=16."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    def ops(E, k):
        layer = MoeLoraLinear(nn.Linear(32, 16), r=4, lora_alpha=8, num_experts=E, top_k=k).train()
        x = torch.randn(2, 5, 32)
        with Count() as c:
            (layer(x).sum() + layer.aux_loss).backward()
        return c.ops

    assert ops(2, 1) == ops(16, 2) == ops(16, 8)
    assert sum(op == "mm" for op in ops(16, 2)) <= 9   # base + router + A + B forward, and backward


def test_topk_mask_selects_like_topk_and_breaks_ties_by_index():
    """The elementwise selection a compiled layer uses equals torch.topk's (ties: the lower index)."""
    from vlft.tuners.moelora.layer import topk_mask
    g = torch.Generator().manual_seed(0)
    for E, k in [(4, 2), (8, 3), (16, 1), (5, 4)]:
        logits = torch.randn(500, E, generator=g)
        ref = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(k, -1).indices, True)
        assert torch.equal(topk_mask(logits, k), ref)
    tied = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 2.0, 2.0]])
    assert topk_mask(tied, 2).tolist() == [[True, True, False, False], [False, True, True, False]]

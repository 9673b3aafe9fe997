"""MoE-LoRA layer: E LoRA experts on one base Linear, mixed per token by a top-k router.

For an input token x (in features) the layer returns

    base(x) + sum_{e in topk(x)} g_e(x) * (alpha / r) * B_e A_e dropout(x)

where g(x) = softmax over the router logits W_router x, kept on the top-k experts and
renormalised to sum to 1 (identical to a softmax over just the selected logits).

Shapes (E experts, rank r):
    lora_expert_A  (E*r, in)   rows e*r:(e+1)*r are expert e's A (an nn.Linear weight, like PEFT's lora_A)
    lora_expert_B  (out, E*r)  columns e*r:(e+1)*r are expert e's B (like PEFT's lora_B), zero at init
    lora_router    Linear(in -> E)
All experts run as two matmuls: x @ A_all^T -> (..., E*r), scaled per expert by the sparse
gates (zero for unselected experts), then @ B_all^T -> (..., out). No loop over experts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class RoutingContext:
    """State shared by all MoE-LoRA layers of one model, set by a pre-hook on the top model.

    ``token_mask``: the model call's 2-D attention mask (batch, seq). A layer whose input has
    leading shape (batch, seq) uses it to leave padding out of the load-balancing loss; other
    inputs (vision patches, one-token decode steps) count every token. The mask is kept until the
    next forward so a gradient-checkpointing recompute sees the same one.
    """

    def __init__(self) -> None:
        self.token_mask: torch.Tensor | None = None
        self.collect_stats: bool = True          # training: per-expert load + entropy (aux loss always)
        self.stats_every: int = 1                # ...on every n-th model forward only
        self.collect_eval_stats: bool = False    # eval/generation: record nothing unless asked
        self.forward_count: int = 0              # model forwards seen by the pre-hook (host-side int)
        self._flat: tuple | None = None          # (mask, mask as (tokens, 1) float, 1 / real tokens)
        self.aux_coef: float = 0.0               # > 0: aux-loss gradient applied in each layer's backward
        self.n_layers: int = 1                   # layers the aux loss is averaged over
        self.aux_grad_scale: Any = 1.0           # float or () -> float/tensor, read in backward

    def backward_scale(self) -> Any:
        s = self.aux_grad_scale
        return s() if callable(s) else s

    def want_stats(self) -> bool:
        return self.collect_stats and self.forward_count % self.stats_every == 0

    def mask_for(self, lead_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mask (tokens, 1) float, 1/real-token count) when the mask fits ``lead_shape``; cached per mask."""
        m = self.token_mask
        if m is None or tuple(m.shape) != tuple(lead_shape):
            return None
        if self._flat is None or self._flat[0] is not m:
            flat = m.reshape(-1, 1).float()
            self._flat = (m, flat, 1.0 / flat.sum().clamp_min(1.0))
        return self._flat[1], self._flat[2]


# -- the math, shared by MoeLoraLinear and the PEFT-registered layer (peft_compat.py) --------------
@torch.no_grad()
def init_moelora_weights(A: torch.Tensor, B: torch.Tensor, router: nn.Linear, router_init_scale: float,
                         generator: torch.Generator | None = None) -> None:
    """A: kaiming-uniform(a=sqrt(5)) like PEFT's lora_A (fan_in = in for every expert alike);
    B: zeros, so the wrapped model starts exactly equal to the base; router: N(0, (scale/sqrt(in))^2)."""
    a = torch.empty(A.shape, dtype=torch.float32)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
    A.copy_(a)
    B.zero_()
    w = torch.empty(router.weight.shape, dtype=torch.float32)
    nn.init.normal_(w, std=router_init_scale / math.sqrt(router.in_features), generator=generator)
    router.weight.copy_(w)
    if router.bias is not None:
        router.bias.zero_()


def route(logits: torch.Tensor, top_k: int, scaling: float, with_probs: bool
          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gates (..., E): alpha/r times the renormalised top-k weights, zero for unselected experts;
    and, when asked (training), the full router probabilities (..., E) for the balancing loss.

    A softmax over the top-k logits equals a softmax over all E then renormalising the kept k.
    """
    logits = logits.float()  # fp32 routing (Switch's "selective precision"): bf16 ties flip routes
    E = logits.shape[-1]
    probs = torch.softmax(logits, dim=-1) if (with_probs or top_k == E) else None
    if top_k == E:  # dense mixture: nothing to select
        return probs * scaling, probs
    top_l, top_i = logits.topk(top_k, dim=-1)
    gates = torch.zeros_like(logits).scatter(-1, top_i, torch.softmax(top_l, dim=-1) * scaling)
    return gates, probs


def mix_experts(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gates: torch.Tensor,
                r: int) -> torch.Tensor:
    """sum_e gates_e * B_e A_e x for all tokens with two matmuls: (..., in) -> (..., out)."""
    h = F.linear(x, A)                                            # (..., E*r): every expert's A at once
    lead, E = h.shape[:-1], gates.shape[-1]
    h = (h.view(*lead, E, r) * gates.unsqueeze(-1).to(h.dtype)).view(*lead, E * r)
    return F.linear(h, B)                                         # (..., out): every expert's B at once


def routing_moments(probs: torch.Tensor, gates: torch.Tensor, top_k: int,
                    mask: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """P (E,): mean router probability per expert (carries the gradient); f (E,): share of the
    top-k assignments per expert (counts, no gradient; sums to 1). Means over real tokens only
    when ``mask`` = (mask (tokens, 1), 1/real tokens) is given.

    A selected expert is one with a non-zero gate (its renormalised weight underflows to 0 only
    if its logit trails the best by ~100, which a router this small never produces).
    """
    E = probs.shape[-1]
    p, g = probs.reshape(-1, E), gates.detach().reshape(-1, E)
    if mask is None:
        n = max(p.shape[0], 1)
        return p.mean(0), torch.count_nonzero(g, dim=0) * (1.0 / (n * top_k))
    m, inv_n = mask
    return (p * m).sum(0) * inv_n, torch.count_nonzero(g * m, dim=0) * (inv_n / top_k)


def switch_loss(P: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Switch Transformer load-balancing loss E * sum_e f_e P_e (1.0 when routing is even); batched
    over leading dims, so all layers can be combined with one call."""
    return P.shape[-1] * (f * P).sum(-1)


def router_entropy(probs: torch.Tensor, mask: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Mean per-token entropy of the router distribution, nats (ln E = uniform); detached."""
    ent = torch.special.entr(probs.detach().reshape(-1, probs.shape[-1])).sum(-1, keepdim=True)
    if mask is None:
        return ent.mean()
    return (ent * mask[0]).sum() * mask[1]


class _AuxGradInBackward(torch.autograd.Function):
    """Identity on a layer's output; its backward also sends ``grad_P`` (times the context's
    backward scale) into the router moments ``P``, i.e. the aux-loss gradient is applied inside
    this layer's backward (Megatron-LM's MoEAuxLossAutoScaler idea).

    Why: summing the aux loss at the end makes backward reach every layer's router first, so
    with gradient checkpointing all layers are recomputed and held at once (24 GiB vs 6.6 GiB
    on Qwen3-VL-4B, docs/performance.md). Here each router's aux gradient waits for its layer.
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, P: torch.Tensor, grad_P: torch.Tensor, routing: "RoutingContext"):
        ctx.save_for_backward(grad_P)
        ctx.routing = routing
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad_P,) = ctx.saved_tensors
        return grad_out, grad_P * ctx.routing.backward_scale(), None, None


class MoeRouted:
    """Marker + readouts shared by MoE-LoRA layers, from the last training forward.

    The aux loss is kept as its two (E,) moments so ``moelora_aux_loss`` combines all layers in a
    few kernels instead of three per layer.
    """

    num_experts: int
    top_k: int
    context: RoutingContext
    router_P: torch.Tensor | None = None          # (E,) mean router prob, with grad (training only)
    router_f: torch.Tensor | None = None          # (E,) share of top-k assignments
    load_fraction: torch.Tensor | None = None     # (E,) = router_f of the last statistics forward
    router_entropy: torch.Tensor | None = None    # () mean per-token router entropy, nats

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """This layer's Switch loss from the last training forward (with grad), or None."""
        return None if self.router_P is None else switch_loss(self.router_P, self.router_f)

    def _wants_probs(self) -> bool:
        return self.training or self.context.collect_eval_stats

    def _record(self, probs: torch.Tensor | None, gates: torch.Tensor) -> None:
        if probs is None or not self._wants_probs():
            return
        ctx = self.context
        mask = ctx.mask_for(probs.shape[:-1])
        P, f = routing_moments(probs, gates, self.top_k, mask)
        self.router_P, self.router_f = (P, f) if self.training else (None, None)
        if ctx.want_stats() or not self.training:
            self.load_fraction, self.router_entropy = f, router_entropy(probs, mask)

    def _attach_aux(self, out: torch.Tensor) -> torch.Tensor:
        """With ``context.aux_coef`` > 0: tie this layer's aux-loss gradient to ``out``'s backward
        and keep only a detached ``router_P`` (the logged aux value)."""
        P, ctx = self.router_P, self.context
        if P is None or ctx.aux_coef <= 0 or not P.requires_grad or not torch.is_grad_enabled():
            return out
        # d(coef * mean_l E * sum_e f_le P_le) / dP_l = coef / L * E * f_l  (f carries no gradient)
        grad_P = (ctx.aux_coef / max(ctx.n_layers, 1) * P.shape[-1]) * self.router_f.detach().to(P.dtype)
        self.router_P = P.detach()
        return _AuxGradInBackward.apply(out, P, grad_P, ctx)


class MoeLoraLinear(nn.Module, MoeRouted):
    """Wraps an ``nn.Linear`` or bitsandbytes ``Linear4bit``/``Linear8bitLt`` (both subclass nn.Linear)."""

    def __init__(self, base_layer: nn.Module, r: int, lora_alpha: float, num_experts: int, top_k: int,
                 lora_dropout: float = 0.0, router_bias: bool = False, router_init_scale: float = 0.1,
                 adapter_dtype: torch.dtype | None = torch.float32, generator: torch.Generator | None = None,
                 context: RoutingContext | None = None) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"MoeLoraLinear wraps nn.Linear (incl. bitsandbytes Linear4bit), "
                            f"got {type(base_layer).__name__}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r, self.lora_alpha = r, lora_alpha
        self.num_experts, self.top_k = num_experts, top_k
        self.scaling = lora_alpha / r
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.context = context or RoutingContext()
        self.adapter_enabled = True

        kw = dict(device=base_layer.weight.device, dtype=adapter_dtype or base_compute_dtype(base_layer))
        E, fin, fout = num_experts, self.in_features, self.out_features
        self.lora_expert_A = nn.Parameter(torch.empty(E * r, fin, **kw))
        self.lora_expert_B = nn.Parameter(torch.empty(fout, E * r, **kw))
        self.lora_router = nn.Linear(fin, E, bias=router_bias, **kw)
        init_moelora_weights(self.lora_expert_A, self.lora_expert_B, self.lora_router, router_init_scale,
                             generator)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.adapter_enabled:
            return result
        if not torch.is_autocast_enabled(x.device.type):
            # Same policy as PEFT with 4-bit bases: compute the adapter in its own dtype, cast back.
            x = x.to(self.lora_expert_A.dtype)
        gates, probs = route(self.lora_router(x), self.top_k, self.scaling, self._wants_probs())  # (..., E)
        delta = mix_experts(self.lora_dropout(x), self.lora_expert_A, self.lora_expert_B, gates, self.r)
        self._record(probs, gates)
        return self._attach_aux(result + delta.to(result.dtype))

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, experts={self.num_experts}, "
                f"top_k={self.top_k}, scaling={self.scaling:g}")

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter + router tensors under their module-relative names."""
        sd = {"lora_expert_A": self.lora_expert_A, "lora_expert_B": self.lora_expert_B,
              "lora_router.weight": self.lora_router.weight}
        if self.lora_router.bias is not None:
            sd["lora_router.bias"] = self.lora_router.bias
        return sd

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.lora_expert_A, self.lora_expert_B, *self.lora_router.parameters()]

    @staticmethod
    def expected_params(in_features: int, out_features: int, r: int, num_experts: int,
                        router_bias: bool = False) -> int:
        """E*r*(in+out) expert weights + in*E router weights (+E with a router bias)."""
        return num_experts * r * (in_features + out_features) + in_features * num_experts + (
            num_experts if router_bias else 0)


def base_compute_dtype(base_layer: nn.Module) -> torch.dtype:
    """dtype the base layer computes in (a 4-bit weight's storage dtype is uint8: use compute_dtype)."""
    w = base_layer.weight
    fallback = w.dtype if w.dtype.is_floating_point else torch.float32
    return getattr(base_layer, "compute_dtype", None) or fallback

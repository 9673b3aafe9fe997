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

    def want_stats(self) -> bool:
        return self.collect_stats and self.forward_count % self.stats_every == 0

    def mask_for(self, lead_shape: torch.Size) -> torch.Tensor | None:
        m = self.token_mask
        if m is None or tuple(m.shape) != tuple(lead_shape):
            return None
        return m


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


def route(logits: torch.Tensor, top_k: int, scaling: float
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gates (..., E) with alpha/r folded in, router probs (..., E) fp32, selected expert ids (..., k).

    Softmax over all E logits then renormalising the kept top-k equals a softmax over only the
    top-k logits; we take the first form because the full probabilities feed the balancing loss.
    """
    # fp32 softmax (Switch's "selective precision"): bf16 logits make routing flip on near-ties.
    probs = torch.softmax(logits.float(), dim=-1)
    if top_k == probs.shape[-1]:  # dense mixture: nothing to select
        return probs * scaling, probs, None
    top_p, top_i = probs.topk(top_k, dim=-1)
    w = top_p * (scaling / top_p.sum(-1, keepdim=True))
    gates = torch.zeros_like(probs).scatter(-1, top_i, w)
    return gates, probs, top_i


def mix_experts(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gates: torch.Tensor,
                r: int) -> torch.Tensor:
    """sum_e gates_e * B_e A_e x for all tokens with two matmuls: (..., in) -> (..., out)."""
    h = F.linear(x, A)                                            # (..., E*r): every expert's A at once
    lead, E = h.shape[:-1], gates.shape[-1]
    h = (h.view(*lead, E, r) * gates.unsqueeze(-1).to(h.dtype)).view(*lead, E * r)
    return F.linear(h, B)                                         # (..., out): every expert's B at once


def balance_loss(probs: torch.Tensor, top_i: torch.Tensor | None, top_k: int,
                 mask: torch.Tensor | None, with_loss: bool, with_stats: bool
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Switch load-balancing loss E * sum_e f_e P_e, load fractions f (E,) and mean router entropy.

    f_e: fraction of the top-k assignments that go to expert e (sums to 1; not differentiable);
    P_e: mean router probability of e (carries the gradient). The loss is 1.0 at perfectly even
    routing. ``mask`` (same leading shape as probs, 1 = real token) leaves padding out.
    """
    E = probs.shape[-1]
    p = probs.reshape(-1, E)
    m = mask.reshape(-1, 1).to(p.dtype) if mask is not None else None
    denom = m.sum().clamp_min(1.0) if m is not None else None

    def mean0(t: torch.Tensor) -> torch.Tensor:  # mean over real tokens
        return t.mean(0) if m is None else (t * m).sum(0) / denom

    P = mean0(p)
    if top_i is None:  # every token uses every expert
        f = torch.full_like(P, 1.0 / E)
    else:  # (tokens, E) 0/1 selection, built only here (training), not in the inference path
        f = mean0(torch.zeros_like(p).scatter_(-1, top_i.reshape(-1, top_k), 1.0)) / top_k
    loss = E * (f * P).sum() if with_loss else None
    if not with_stats:
        return loss, None, None
    ent = mean0(torch.special.entr(p.detach()).sum(-1, keepdim=True)).squeeze(0)
    return loss, f.detach(), ent


class MoeRouted:
    """Marker + readouts shared by MoE-LoRA layers: last training forward's aux loss and stats."""

    num_experts: int
    top_k: int
    context: RoutingContext
    aux_loss: torch.Tensor | None = None          # () Switch loss, with grad
    load_fraction: torch.Tensor | None = None     # (E,) share of top-k assignments per expert
    router_entropy: torch.Tensor | None = None    # () mean per-token entropy of router probs, nats

    def _record(self, probs: torch.Tensor, top_i: torch.Tensor | None) -> None:
        ctx = self.context
        if not (self.training or ctx.collect_eval_stats):
            return
        with_stats = ctx.want_stats() or not self.training
        loss, f, ent = balance_loss(probs, top_i, self.top_k, ctx.mask_for(probs.shape[:-1]),
                                    with_loss=self.training, with_stats=with_stats)
        self.aux_loss = loss
        if with_stats:
            self.load_fraction, self.router_entropy = f, ent


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
        gates, probs, top_i = route(self.lora_router(x), self.top_k, self.scaling)    # (..., E) gates/probs
        delta = mix_experts(self.lora_dropout(x), self.lora_expert_A, self.lora_expert_B, gates, self.r)
        self._record(probs, top_i)
        return result + delta.to(result.dtype)

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

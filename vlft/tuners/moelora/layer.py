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
        self.collect_eval_stats: bool = False    # eval/generation: record nothing unless asked

    def mask_for(self, lead_shape: torch.Size) -> torch.Tensor | None:
        m = self.token_mask
        if m is None or tuple(m.shape) != tuple(lead_shape):
            return None
        return m


class MoeLoraLinear(nn.Module):
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

        weight = base_layer.weight
        device = weight.device
        if adapter_dtype is None:  # "base": a quantized weight's storage dtype is uint8, use compute dtype
            adapter_dtype = getattr(base_layer, "compute_dtype", None) or (
                weight.dtype if weight.dtype.is_floating_point else torch.float32)
        E, fin, fout = num_experts, self.in_features, self.out_features
        kw = dict(device=device, dtype=adapter_dtype)
        self.lora_expert_A = nn.Parameter(torch.empty(E * r, fin, **kw))
        self.lora_expert_B = nn.Parameter(torch.empty(fout, E * r, **kw))
        self.lora_router = nn.Linear(fin, E, bias=router_bias, **kw)
        self.reset_adapter_parameters(router_init_scale, generator)

        # Last training forward (tensors, detached except aux_loss; no host sync in forward).
        self.aux_loss: torch.Tensor | None = None
        self.load_fraction: torch.Tensor | None = None     # (E,) share of top-k assignments per expert
        self.router_entropy: torch.Tensor | None = None    # () mean per-token entropy of router probs, nats

    @torch.no_grad()
    def reset_adapter_parameters(self, router_init_scale: float = 0.1,
                                 generator: torch.Generator | None = None) -> None:
        # A: kaiming-uniform(a=sqrt(5)) as PEFT's lora_A (fan_in = in for every expert alike); B: zeros,
        # so the wrapped model starts exactly equal to the base model.
        A = torch.empty(self.lora_expert_A.shape, dtype=torch.float32)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
        self.lora_expert_A.copy_(A)
        self.lora_expert_B.zero_()
        W = torch.empty(self.lora_router.weight.shape, dtype=torch.float32)
        nn.init.normal_(W, std=router_init_scale / math.sqrt(self.in_features), generator=generator)
        self.lora_router.weight.copy_(W)
        if self.lora_router.bias is not None:
            self.lora_router.bias.zero_()

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.adapter_enabled:
            return result
        out_dtype = result.dtype
        if not torch.is_autocast_enabled(x.device.type):
            # Same policy as PEFT with 4-bit bases: compute the adapter in its own dtype, cast back.
            x = x.to(self.lora_expert_A.dtype)
        gates, probs, selected = self.route(x)                         # (..., E) each
        h = F.linear(self.lora_dropout(x), self.lora_expert_A)          # (..., E*r): all A's at once
        lead = h.shape[:-1]
        h = (h.view(*lead, self.num_experts, self.r) * gates.unsqueeze(-1).to(h.dtype)).view(*lead, -1)
        delta = F.linear(h, self.lora_expert_B)                         # (..., out): all B's at once
        if self.training or self.context.collect_eval_stats:
            self._record(probs, selected, lead)
        return result + delta.to(out_dtype)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Gates (..., E) with alpha/r folded in, router probs (..., E) fp32, and the 0/1 selection.

        Softmax over all E logits then renormalising the kept top-k equals a softmax over only the
        top-k logits; we take the first form because the full probabilities feed the balancing loss.
        """
        # fp32 softmax (Switch's "selective precision"): bf16 logits make routing flip on ties.
        probs = torch.softmax(self.lora_router(x).float(), dim=-1)
        if self.top_k == self.num_experts:  # dense mixture: nothing to select
            return probs * self.scaling, probs, None
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        w = top_p * (self.scaling / top_p.sum(-1, keepdim=True))
        gates = torch.zeros_like(probs).scatter(-1, top_i, w)
        selected = torch.zeros_like(probs).scatter(-1, top_i, 1.0)
        return gates, probs, selected

    def _record(self, probs: torch.Tensor, selected: torch.Tensor | None, lead: torch.Size) -> None:
        """Switch load-balancing loss E * sum_e f_e P_e and routing stats, padding left out when known.

        f_e: fraction of the top-k assignments that go to expert e (sums to 1; not differentiable);
        P_e: mean router probability of e (carries the gradient). Equals 1.0 for perfectly even routing.
        """
        E = self.num_experts
        p = probs.reshape(-1, E)
        s = selected.reshape(-1, E) if selected is not None else None
        mask = self.context.mask_for(lead)
        m = mask.reshape(-1, 1).to(p.dtype) if mask is not None else None
        denom = m.sum().clamp_min(1.0) if m is not None else None

        def mean0(t: torch.Tensor) -> torch.Tensor:  # mean over real tokens
            return t.mean(0) if m is None else (t * m).sum(0) / denom

        P = mean0(p)
        f = mean0(s) / self.top_k if s is not None else torch.full_like(P, 1.0 / E)
        self.aux_loss = E * (f * P).sum() if self.training else None
        if self.context.collect_stats or not self.training:
            self.load_fraction = f.detach()
            self.router_entropy = mean0(torch.special.entr(p.detach()).sum(-1, keepdim=True)).squeeze(0)

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

"""MoE-LoRA layer: E LoRA experts on one base Linear, mixed per token by a top-k router.

For an input token x (in features) the layer returns

    base(x) + sum_{e in topk(x')} g_e(x') * (alpha / r) * B_e A_e x',    x' = dropout(x)

where g(x') = softmax over the router logits W_router x', kept on the top-k experts and
renormalised to sum to 1 (identical to a softmax over just the selected logits). The router reads
the same dropped-out input as the experts (identical in eval, where dropout is off) so that router
and every expert's A are one matmul: on a launch-bound 4-bit step a separate router matmul, forward
and backward, cost ~7% of MoE-LoRA's speed (docs/moelora.md).

Shapes (E experts, rank r):
    lora_expert_A  (E*r, in)   rows e*r:(e+1)*r are expert e's A (an nn.Linear weight, like PEFT's lora_A)
    lora_expert_B  (out, E*r)  columns e*r:(e+1)*r are expert e's B (like PEFT's lora_B), zero at init
    lora_router    Linear(in -> E)
Router and experts run as two matmuls: x' @ [W_router; A_all]^T -> (..., E + E*r), the E*r part
scaled per expert by the sparse gates (zero for unselected experts), then @ B_all^T -> (..., out).
No loop over experts.
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

    What a forward records on its layers (``router_P``/``router_f``, ``load_fraction``,
    ``router_entropy``): everything on a statistics forward (``stats_now``); on other training
    forwards with the in-backward aux gradient, nothing (the gradient needs no readout, and a
    compiled or CUDA-graphed step then returns no per-layer tensors); with ``aux_coef == 0`` the
    moments with their graph on every training forward (the caller adds the loss). Each forward
    starts by clearing the previous one's records, so a readout never mixes forwards.
    """

    def __init__(self) -> None:
        self.token_mask: torch.Tensor | None = None
        self.collect_stats: bool = True          # training: per-expert load + entropy (aux loss always)
        self.stats_every: int = 1                # ...on every n-th model forward only
        self.collect_eval_stats: bool = False    # eval/generation: record nothing unless asked
        self.forward_count: int = 0              # model forwards seen by the pre-hook (host-side int)
        self.stats_now: bool = True              # this forward records statistics (set by the pre-hook)
        self._flat: tuple | None = None          # (mask as (tokens, 1) float, 1 / real tokens)
        self._static: tuple | None = None        # _flat copied into fixed tensors, for compiled layers
        self._flat_bufs: dict = {}               # (tokens, device) -> those fixed tensors
        self._mask_shape: tuple | None = None    # token_mask's shape, or None when there is none
        self.aux_coef: float = 0.0               # > 0: aux-loss gradient applied in each layer's backward
        self.n_layers: int = 1                   # layers the aux loss is averaged over
        self.aux_grad_scale: Any = 1.0           # float, tensor or () -> either; read at each model forward
        self.scale_now: Any = 1.0                # aux_grad_scale's value for this forward (set by the pre-hook)
        self.layers: list = []                   # the layers sharing this context (attach)
        self._recorded: bool = True              # a forward may have left records on the layers

    def attach(self, layers) -> "RoutingContext":
        """Share this context among ``layers`` (the model's MoE-LoRA layers)."""
        self.layers = list(layers)
        for m in self.layers:
            m.context = self
        return self

    def backward_scale(self) -> Any:
        s = self.aux_grad_scale
        return s() if callable(s) else s

    def start_forward(self, training: bool) -> None:
        """Called once per model forward (pre-hook), outside any compiled region: the layers then
        read a bool and a value instead of the ever-changing counter and the caller's scale
        function (a compiler would guard on the one and trace into the other)."""
        if training:
            self.forward_count += 1
        self.stats_now = self.collect_stats and self.forward_count % self.stats_every == 0
        self.scale_now = self.backward_scale()
        if self._recorded:
            for m in self.layers:
                m.clear_records()
        # what the layers may record in this forward (see the class doc); no grad: moments kept
        self._recorded = ((self.stats_now or self.aux_coef == 0 or not torch.is_grad_enabled()) if training
                          else self.collect_eval_stats)

    def want_stats(self) -> bool:
        return self.stats_now

    def set_mask(self, mask: torch.Tensor | None) -> None:
        """The model call's 2-D attention mask (or None), with its (tokens, 1) float form and
        1 / real-token count computed here once per forward, not in every layer.

        Compiled layers get a copy in tensors kept per token count (one pair per batch shape):
        they read them as attributes, i.e. as fixed-address inputs, and a new address each step
        would make CUDA graphs re-record every layer on every step. Eager layers get fresh tensors,
        so a graph kept from an earlier forward (two forwards, one backward) still sees its own mask.
        """
        m = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        self.token_mask, self._mask_shape, self._flat, self._static = m, None, None, None
        if m is None:
            return
        flat = m.reshape(-1, 1).float()
        self._flat = (flat, 1.0 / flat.sum().clamp_min(1.0))
        key = (m.numel(), m.device)
        if key not in self._flat_bufs:
            self._flat_bufs[key] = (torch.empty_like(flat), torch.empty_like(self._flat[1]))
        self._static = self._flat_bufs[key]
        for buf, fresh in zip(self._static, self._flat):
            buf.copy_(fresh)
        self._mask_shape = tuple(m.shape)

    def mask_for(self, lead_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mask (tokens, 1) float, 1/real-token count) when the mask fits ``lead_shape``."""
        if self._mask_shape is None or self._mask_shape != tuple(lead_shape):
            return None
        return self._static if torch.compiler.is_compiling() else self._flat


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
    if torch.compiler.is_compiling():
        # Elementwise selection fuses with the softmax into one kernel; topk + scatter would be two
        # extra kernels per projection, forward and backward (the 4-bit step is launch-bound).
        kept = logits.masked_fill(~topk_mask(logits, top_k), float("-inf"))
        return torch.softmax(kept, dim=-1) * scaling, probs
    top_l, top_i = logits.topk(top_k, dim=-1)
    gates = torch.zeros_like(logits).scatter(-1, top_i, torch.softmax(top_l, dim=-1) * scaling)
    return gates, probs


def topk_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(..., E) bool, True on each row's k largest logits (ties: the lower index wins), from
    pairwise comparisons: (..., E, E) elementwise work instead of a sort, cheap for E <= 64."""
    E = logits.shape[-1]
    idx = torch.arange(E, device=logits.device)
    me, other = logits.unsqueeze(-1), logits.unsqueeze(-2)                 # (..., E, 1), (..., 1, E)
    ahead = (other > me) | ((other == me) & (idx < idx.unsqueeze(-1)))  # other j ranks before e
    return ahead.sum(-1) < k


def mix_experts(h: torch.Tensor, B: torch.Tensor, gates: torch.Tensor, r: int) -> torch.Tensor:
    """sum_e gates_e * B_e h_e for all tokens with one matmul: h (..., E*r) = every expert's A x
    -> (..., out)."""
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


def moe_forward(result: torch.Tensor, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                router_w: torch.Tensor, router_b: torch.Tensor | None, r: int, top_k: int, scaling: float,
                want_moments: bool, want_entropy: bool, mask_flat: torch.Tensor | None,
                inv_n: torch.Tensor | None, attach: bool, aux_mult: Any
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None,
                           torch.Tensor | None]:
    """One MoE-LoRA adapter forward as a pure function of tensors and flags (no module state),
    so a compiled decoder layer traces it without graph breaks.

    result (..., out): the base layer's output; x (..., in): the adapter input after lora_dropout.
    Returns (result + delta, P, f, entropy, grad_P): the moments (E,) when ``want_moments``, the
    router entropy when ``want_entropy``, and with ``attach`` grad_P = aux_mult * f (the in-backward
    aux-loss gradient of ``_AuxGradInBackward``; aux_mult a float or a 0-d tensor); otherwise None.
    """
    E = router_w.shape[0]
    hz = F.linear(x, torch.cat([router_w, A]))                  # (..., E + E*r): router and all A's
    logits = hz[..., :E] if router_b is None else hz[..., :E] + router_b
    gates, probs = route(logits, top_k, scaling, want_moments or want_entropy)
    out = result + mix_experts(hz[..., E:], B, gates, r).to(result.dtype)
    if probs is None or not (want_moments or want_entropy):
        return out, None, None, None, None
    mask = None if mask_flat is None else (mask_flat, inv_n)
    P, f = routing_moments(probs, gates, top_k, mask)
    ent = router_entropy(probs, mask) if want_entropy else None
    grad_P = aux_mult * f.to(P.dtype) if attach else None
    return out, P, f, ent, grad_P


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
    """Identity on a layer's output; its backward also sends ``grad_P`` into the router moments
    ``P``, i.e. the aux-loss gradient is applied inside this layer's backward (Megatron-LM's
    MoEAuxLossAutoScaler idea). ``grad_P`` already carries the loss's backward scale, read at
    forward time (the scale of this micro-step: accumulation and fp16 loss scale change only
    between optimizer steps), so backward is plain tensor code a compiler can trace.

    Why: summing the aux loss at the end makes backward reach every layer's router first, so
    with gradient checkpointing all layers are recomputed and held at once (several times the
    memory on Qwen3-VL-4B, docs/performance.md). Here each router's aux gradient waits for its layer.
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, P: torch.Tensor, grad_P: torch.Tensor):
        ctx.save_for_backward(grad_P)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad_P,) = ctx.saved_tensors
        return grad_out, grad_P, None


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

    def clear_records(self) -> None:
        self.router_P = self.router_f = self.load_fraction = self.router_entropy = None

    def _moe_out(self, result: torch.Tensor, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 router: nn.Linear, dropout: nn.Module, r: int, scaling: float) -> torch.Tensor:
        """base output + the routed expert mix; records the moments/statistics and, in training,
        ties the aux-loss gradient to the output's backward. Shared by both layer classes."""
        if not torch.is_autocast_enabled(x.device.type):
            # Same policy as PEFT with 4-bit bases: compute the adapter in its own dtype, cast back.
            x = x.to(A.dtype)
        ctx = self.context
        attach = (self.training and ctx.aux_coef > 0 and torch.is_grad_enabled()
                  and router.weight.requires_grad)
        record = ctx.want_stats() if self.training else ctx.collect_eval_stats
        keep_P = self.training and not attach  # aux_coef 0 (or no grad): the caller's loss needs P
        want_moments = attach or record or keep_P
        mask = ctx.mask_for(x.shape[:-1]) if want_moments else None
        # d(coef * mean_l E * sum_e f_le P_le) / dP_l = coef / L * E * f_l  (f carries no gradient),
        # times what the LM loss is scaled by before backward
        aux_mult = ctx.aux_coef / max(ctx.n_layers, 1) * self.num_experts * ctx.scale_now if attach else 0.0
        out, P, f, ent, grad_P = moe_forward(result, dropout(x), A, B, router.weight, router.bias, r,
                                             self.top_k, scaling, want_moments, record,
                                             *(mask or (None, None)), attach, aux_mult)
        if record:
            self.load_fraction, self.router_entropy = f, ent
        if self.training and (record or keep_P):
            # the logged aux value; with ``attach`` its gradient goes in through out's backward
            self.router_P, self.router_f = (P.detach() if attach else P), f
        return _AuxGradInBackward.apply(out, P, grad_P) if attach else out


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
        return self._moe_out(result, x, self.lora_expert_A, self.lora_expert_B, self.lora_router,
                             self.lora_dropout, self.r, self.scaling)

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

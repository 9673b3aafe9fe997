"""Compiled decoder layers: the fastest 4-bit training path measured (bench/RESULTS.md).

On a 4-bit Qwen3-VL-4B the eager step is bound by kernel launches (4-bit dequantization, LoRA,
RMSNorm, rotary: tens of thousands of small kernels). ``torch.compile`` on each language-model
decoder layer fuses them; instead of gradient checkpointing, the compiler's partitioner
recomputes activations in backward up to ``activation_memory_budget`` (0 = recompute all it can,
which keeps memory at checkpointing's level). The compiled step is still bound by the host (kernel
launches), so it varies with the machine's CPU; CUDA graphs (``mode="reduce-overhead"``) remove that,
and are the default on one CUDA process (``vlft.train.plan``; measurements in bench/RESULTS.md and
docs/performance.md).
"""

from __future__ import annotations

import logging

import torch

from vlft.train.fast.forward import unwrap_causal_lm

log = logging.getLogger(__name__)


def compile_available(device: str) -> tuple[bool, str]:
    """(True, "") when torch.compile's GPU backend can run on ``device``, else (False, why)."""
    if device != "cuda":
        return False, "compiled layers are the CUDA profile (on the CPU compile time outweighs the gain)"
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover - very old torch
        return False, "this torch has no triton check"
    if not has_triton():
        return False, "triton is not installed (e.g. on Windows); training runs eagerly"
    return True, ""


def decoder_layers(model) -> torch.nn.ModuleList:
    return unwrap_causal_lm(model).model.language_model.layers


def compile_decoder_layers(model, memory_budget: float = 0.0, mode: str | None = None) -> int:
    """``torch.compile`` every language-model decoder layer in place; returns how many.

    All layers share one code object, so one graph (per input shape) serves all of them.
    ``memory_budget`` sets the process-wide ``activation_memory_budget`` of the partitioner:
    0 recomputes activations (and dequantized 4-bit weights) in backward instead of saving them,
    1 saves everything. Gradient checkpointing must be off on these layers (the partitioner
    replaces it). ``mode="reduce-overhead"`` adds CUDA graphs: the caller must then call
    ``torch.compiler.cudagraph_mark_step_begin()`` before each micro-step (the bench and
    ``VlftTrainer(cudagraphs=True)`` do; lora.py's default on one CUDA process, see vlft.train.plan).
    """
    import torch._dynamo
    import torch._functorch.config as fcfg

    if not 0.0 <= memory_budget <= 1.0:
        raise ValueError(f"memory_budget must be in [0, 1], got {memory_budget}")
    fcfg.activation_memory_budget = memory_budget
    # two graphs per (batch, length) shape (layer 0's input needs no gradient, the others' do):
    # the default limit of 8 would fall back to eager after four shapes
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    layers = decoder_layers(model)
    for layer in layers:
        if getattr(layer, "gradient_checkpointing", False):
            raise ValueError("turn gradient checkpointing off on compiled layers "
                             "(set_checkpointing(model, 0)): the partitioner recomputes instead")
        layer.compile(mode=mode)
    return len(layers)


def compiled_decoder_layers(model) -> list[torch.nn.Module]:
    """The decoder layers currently compiled (none for a model without Qwen-VL decoder layers)."""
    try:
        layers = decoder_layers(model)
    except TypeError:
        return []
    return [layer for layer in layers if getattr(layer, "_compiled_call_impl", None) is not None]


def uncompile_decoder_layers(model) -> int:
    """Back to eager layers (e.g. before generation); returns how many were compiled."""
    layers = compiled_decoder_layers(model)
    for layer in layers:
        layer._compiled_call_impl = None
    return len(layers)


def own_first_grad(param: torch.nn.Parameter):
    """Tensor hook for ``param``: the first gradient of an accumulation window is cloned before it
    becomes ``param.grad``, later ones are added into that clone as usual.

    Why: under CUDA graphs a layer's weight gradient is an output of its backward graph, living in
    the graphs' memory pool, and autograd stores the first one as ``.grad`` without a copy. The next
    micro-step's replay writes its gradient into that same memory, so with accumulation > 1 the
    stored ``.grad`` would be overwritten (torch raises "accessing tensor output of CUDAGraphs that
    has been overwritten"). One copy per parameter and optimizer step: ~24 MB for LoRA r=8.
    """
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad.clone() if param.grad is None else grad
    return hook


def keep_grads_out_of_graph_pool(model) -> list:
    """``own_first_grad`` on every trainable parameter; returns the hook handles."""
    return [p.register_hook(own_first_grad(p)) for p in model.parameters() if p.requires_grad]

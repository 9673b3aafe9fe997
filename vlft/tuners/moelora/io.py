"""Save and load MoE-LoRA adapters PEFT-style.

Files written by ``save_moelora`` (PEFT's layout, so the folder looks like any adapter):
    adapter_config.json        MoeLoraConfig + "peft_type": "MOELORA", "moelora_version"
    adapter_model.safetensors  base_model.model.<module>.lora_expert_A     (E*r, in)
                               base_model.model.<module>.lora_expert_B     (out, E*r)
                               base_model.model.<module>.lora_router.weight (E, in)
                               base_model.model.<module>.<param>  for modules_to_save
Only adapter, router and modules_to_save tensors are stored, never base weights.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlft.errors import AdapterLoadError
from vlft.tuners.moelora.config import WEIGHTS_NAME, MoeLoraConfig
from vlft.tuners.moelora.model import apply_moelora, get_moelora_config, moelora_layers
from vlft.tuners.moelora.targeting import _linear_names, _modules_to_save, _name_examples

KEY_PREFIX = "base_model.model."      # PEFT's prefix for adapter keys


def moelora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter + router (+ modules_to_save) tensors under PEFT-style keys, detached CPU copies."""
    # clone: tied weights share storage, which safetensors refuses
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in moelora_state_dict_refs(model).items()}


def save_moelora(model: nn.Module, directory: str | Path) -> Path:
    """Write adapter_config.json and adapter_model.safetensors into ``directory`` (atomically)."""
    from safetensors.torch import save_file

    config = get_moelora_config(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if config.base_model_name_or_path is None:
        base = (getattr(getattr(model, "config", None), "_name_or_path", None)
                or getattr(model, "name_or_path", None))
        config = config.replace(base_model_name_or_path=str(base) if base else None)
    tensors = moelora_state_dict(model)
    fd, tmp = tempfile.mkstemp(prefix=f".{WEIGHTS_NAME}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "peft_type": "MOELORA"})
        from vlft.utils.io import current_umask
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide it from other users
        os.replace(tmp, directory / WEIGHTS_NAME)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    config.save(directory)
    return directory


def load_moelora(model: nn.Module, directory: str | Path, is_trainable: bool = False) -> nn.Module:
    """Attach a saved MoE-LoRA adapter to a FRESH base model (in place) and return it.

    Validates everything before touching weights: one AdapterLoadError naming the folder and the
    first module that does not fit. ``is_trainable=False`` freezes the adapter and sets eval mode.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config = MoeLoraConfig.load(directory)
    wpath = directory / WEIGHTS_NAME
    if not wpath.is_file():
        raise AdapterLoadError(f"{directory}: {WEIGHTS_NAME} is missing; the adapter folder is incomplete")
    state = load_file(str(wpath))
    expert_modules = sorted({k[len(KEY_PREFIX):].rsplit(".lora_expert_A", 1)[0]
                             for k in state if k.endswith(".lora_expert_A")})
    if not expert_modules:
        raise AdapterLoadError(f"{directory}: {WEIGHTS_NAME} holds no MoE-LoRA expert weights")
    names = dict(model.named_modules())
    for n in expert_modules:
        if not isinstance(names.get(n), nn.Linear):
            raise AdapterLoadError(
                f"{directory}: module {n} is not a Linear in this {type(model).__name__} "
                f"(adapter trained on {config.base_model_name_or_path}?); Linear names here look like: "
                f"{_name_examples(_linear_names(model), 5)}")
    # Check keys and shapes against the bare model before wrapping anything: a failed load
    # leaves the model as it was.
    _check_state(_expected_shapes(model, expert_modules, config), state, directory,
                 config.base_model_name_or_path)
    apply_moelora(model, config, module_names=expert_modules)
    _copy_checked(model, state, directory, config.base_model_name_or_path)
    for p in _trainable_refs(model):
        p.requires_grad_(is_trainable)
    if not is_trainable:
        model.eval()
    return model


def load_moelora_weights(model: nn.Module, directory: str | Path) -> nn.Module:
    """Copy a saved adapter's tensors into a model that already has the same MoE-LoRA (e.g. resume).

    Same validation as load_moelora; requires_grad and train/eval mode are left as they are.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    wpath = directory / WEIGHTS_NAME
    if not wpath.is_file():
        raise AdapterLoadError(f"{directory}: {WEIGHTS_NAME} is missing; the adapter folder is incomplete")
    _copy_checked(model, load_file(str(wpath)), directory, get_moelora_config(model).base_model_name_or_path)
    return model


def _expected_shapes(model: nn.Module, expert_modules: list[str], config: MoeLoraConfig) -> dict[str, tuple]:
    """Key -> shape the adapter file must hold for these (still bare) Linears and modules_to_save."""
    E, r = config.num_experts, config.r
    out: dict[str, tuple] = {}
    for n in expert_modules:
        lin = model.get_submodule(n)
        out.update({f"{KEY_PREFIX}{n}.lora_expert_A": (E * r, lin.in_features),
                    f"{KEY_PREFIX}{n}.lora_expert_B": (lin.out_features, E * r),
                    f"{KEY_PREFIX}{n}.lora_router.weight": (E, lin.in_features)})
        if config.router_bias:
            out[f"{KEY_PREFIX}{n}.lora_router.bias"] = (E,)
    for name in _modules_to_save(model, config):
        for k, t in model.get_submodule(name).named_parameters():
            out[f"{KEY_PREFIX}{name}.{k}"] = tuple(t.shape)
    return out


def _check_state(expected: dict[str, tuple], state: dict[str, torch.Tensor], directory: Path,
                 trained_on: Any) -> None:
    """One AdapterLoadError naming the folder and the first key that is missing, extra or misshapen."""
    for k in sorted(set(expected) | set(state)):
        if k not in state:
            raise AdapterLoadError(f"{directory}: {k} is missing from {WEIGHTS_NAME}")
        if k not in expected:
            raise AdapterLoadError(f"{directory}: {k} in {WEIGHTS_NAME} has no place in this model "
                                   f"(config and weights disagree)")
        if tuple(state[k].shape) != tuple(expected[k]):
            raise AdapterLoadError(
                f"{directory}: {k[len(KEY_PREFIX):]} has shape {tuple(state[k].shape)} in the adapter but "
                f"this model needs {tuple(expected[k])} (adapter trained on {trained_on}?)")


def _copy_checked(model: nn.Module, state: dict[str, torch.Tensor], directory: Path, trained_on: Any) -> None:
    """Validate every key and shape first, then copy into the live parameters."""
    expected = moelora_state_dict_refs(model)
    _check_state({k: tuple(v.shape) for k, v in expected.items()}, state, directory, trained_on)
    with torch.no_grad():
        for k, t in expected.items():
            t.copy_(state[k].to(device=t.device, dtype=t.dtype))


def moelora_state_dict_refs(model: nn.Module) -> dict[str, torch.Tensor]:
    """Like moelora_state_dict but the live parameters themselves (for loading in place)."""
    config = get_moelora_config(model)
    sd: dict[str, torch.Tensor] = {}
    for name, layer in moelora_layers(model).items():
        for k, t in layer.adapter_state_dict().items():
            sd[f"{KEY_PREFIX}{name}.{k}"] = t
    for name in _modules_to_save(model, config):
        for k, t in model.get_submodule(name).named_parameters():
            sd[f"{KEY_PREFIX}{name}.{k}"] = t
    return sd


def _trainable_refs(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in moelora_state_dict_refs(model).values() if isinstance(p, nn.Parameter)]

"""Adapters: the method plug-ins (methods.py: name -> AdapterMethod), target resolution and the
parameter counter (registry.py, training side), and loading a trained adapter onto a base
(loading.py, inference side; imported lazily)."""

from vlft.adapters.methods import METHODS, AdapterMethod, TrainingHooks, get_method
from vlft.adapters.registry import AdapterError, AdapterSpec, apply_adapter, count_parameters, resolve_target_modules

ADAPTERS = METHODS  # the former name of the table

_LOADING = ("AdapterLoadError", "AdapterInfo", "check_adapter_dir", "describe_adapter", "is_moelora",
            "load_adapter", "read_adapter_config", "verify_adapter_applied")

__all__ = ["ADAPTERS", "METHODS", "AdapterMethod", "TrainingHooks", "get_method", "AdapterError", "AdapterSpec",
           "apply_adapter", "count_parameters", "resolve_target_modules", *_LOADING]


def __getattr__(name: str):
    if name in _LOADING:
        from vlft.adapters import loading
        return getattr(loading, name)
    raise AttributeError(f"module 'vlft.adapters' has no attribute {name!r}")

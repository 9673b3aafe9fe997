"""Adapters: the name -> factory table and target resolution (registry.py, training side) and
loading a trained adapter onto a base (loading.py, inference side; imported lazily)."""

from vlft.adapters.registry import (ADAPTERS, AdapterError, AdapterSpec, apply_adapter, count_parameters,
                                    resolve_target_modules)

_LOADING = ("AdapterLoadError", "AdapterInfo", "check_adapter_dir", "describe_adapter", "is_moelora",
            "load_adapter", "read_adapter_config", "verify_adapter_applied")

__all__ = ["ADAPTERS", "AdapterError", "AdapterSpec", "apply_adapter", "count_parameters",
           "resolve_target_modules", *_LOADING]


def __getattr__(name: str):
    if name in _LOADING:
        from vlft.adapters import loading
        return getattr(loading, name)
    raise AttributeError(f"module 'vlft.adapters' has no attribute {name!r}")

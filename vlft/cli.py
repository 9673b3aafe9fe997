"""What every stage script does around its one library call."""

from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn, Sequence, TypeVar

from vlft.config import BaseConfig, parse_config
from vlft.errors import BAD_INPUT, UserError

C = TypeVar("C", bound=BaseConfig)
__all__ = ["BAD_INPUT", "UserError", "exit_now", "run_stage"]


def exit_now(rc: int | None) -> NoReturn:
    """End a stage command whose work is done and saved: run the atexit handlers (logging, SwanLab,
    multiprocessing's clean-up of worker processes), flush, then leave without the interpreter's
    teardown, which garbage-collects torch and transformers for seconds after everything is on disk
    (docs/performance.md, "Time to a trained adapter"). Only for ``__main__`` blocks and command entry
    points: a caller in Python gets ``main()``'s return value instead."""
    import atexit
    import os
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing left to say
                pass
        os._exit(rc if isinstance(rc, int) else 1 if rc else 0)


def run_stage(config_cls: type[C], stage: Callable[[C], Any], argv: Sequence[str] | None = None,
              errors: tuple[type[BaseException], ...] = (), error_rc: int = BAD_INPUT) -> tuple[int, Any]:
    """Parse flags (defaults < --config YAML < flags), set up logging, run ``stage(cfg)``.

    Bad input (any ``vlft.errors.UserError``, plus the stage's extra ``errors``) becomes one
    ``error: ...`` line on stderr and ``(error_rc, None)``, never a traceback; otherwise returns
    ``(0, result)``. ``vlft.errors.BAD_INPUT`` (2, as argparse's for a bad flag) is the exit code
    for bad input in every stage.
    """
    from vlft.utils.logging import setup_logging

    cfg = parse_config(config_cls, argv)
    setup_logging(getattr(cfg, "verbose", False))
    try:
        return 0, stage(cfg)
    except (UserError, *errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return error_rc, None

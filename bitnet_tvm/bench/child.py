"""Run one step (an export, a compile) in a spawned child process.

Exporting and compiling a 2B-class model allocate GBs that a Python process seldom gives back to
the OS; doing them in a child keeps the benchmark process's resident memory, and so its memory
measurements, about the backends it runs.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["run_in_child"]


def _main(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("bitnet_tvm").setLevel(logging.INFO)  # progress of long steps
    func(*args)


def run_in_child(func: Callable[..., Any], *args: Any, what: str, isolate: bool = True) -> None:
    """Call ``func(*args)`` (a module-level function) in a spawned process and wait for it;
    ``isolate=False`` calls it in this process instead (small models: no process start-up).

    Raises
    ------
    RuntimeError
        If the child exits with a non-zero code (its traceback is on stderr).
    """
    if not isolate:
        func(*args)
        return
    child = multiprocessing.get_context("spawn").Process(target=_main, args=(func, args))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(
            f"{what} failed in a child process (exit code {child.exitcode}; see its error above)"
        )

"""Where candidates are measured: this machine, or devices registered with a TVM RPC tracker.

``--rpc HOST:PORT --device-key KEY`` measures on a device that ran
``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`` (needs ``tornado``), through
MetaSchedule's ``RPCRunner``; candidates are still built here, for the tuning target (give the
device's target, e.g. an ARM ``Target`` dict or ``cuda``).

Timeouts: builds of these kernels take a few seconds on a loaded 2-core machine, so the builder
gets :data:`BUILD_TIMEOUT_S` (MetaSchedule's 30 s default timed out candidates under load); a
run gets :data:`RUN_TIMEOUT_S`, enough for prefill tiles measured ``number * repeat`` times.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import tvm
from tvm.s_tir import meta_schedule as ms

from bitnet_tvm.tuning.inputs import COLD_BYTES, alloc_local, alloc_rpc, run_rotating

__all__ = ["BUILD_TIMEOUT_S", "RUN_TIMEOUT_S", "Measurer", "build_kernel", "parse_rpc"]

BUILD_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 60.0
SESSION_TIMEOUT_S = 120


def build_kernel(mod: tvm.IRModule, target: tvm.target.Target, _params: dict | None):
    """The builder's build function (runs in its worker processes).

    MetaSchedule's default also imports ``tvm.s_tir.tensor_intrin``, which registers every
    tensor intrinsic TVM ships by parsing TVMScript: about 2 minutes per worker on a loaded
    2-core machine.  Our schedules are tensorized before they reach the builder, so it is not
    needed.
    """
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return build(mod, target=target)


def parse_rpc(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--rpc must be HOST:PORT (a tracker address), got {address!r}")
    return host, int(port)


@dataclass
class Measurer:
    """The MetaSchedule builder and runner of a tuning session.

    Parameters
    ----------
    rpc : str, optional
        Tracker ``HOST:PORT``; None measures on this machine.
    device_key : str, optional
        The key the device registered with (required with ``rpc``).
    number, repeat, min_repeat_ms : int
        Evaluator settings (see ``EvaluatorConfig``).
    max_workers : int, optional
        Builder processes.
    cache_flush : bool
        Measure cold: here, calls cycling through copies of the arguments (``repeat`` rounds,
        :func:`~bitnet_tvm.tuning.inputs.run_rotating`); over RPC, MetaSchedule's flush of
        the CPU caches before each run (use ``number=1``).
    zeros : float, optional
        Measure with sparse activations, this share of zeros per row
        (:mod:`~bitnet_tvm.tuning.inputs`); None: MetaSchedule's random arguments.
    """

    rpc: str | None = None
    device_key: str | None = None
    number: int = 3
    repeat: int = 3
    min_repeat_ms: int = 20
    max_workers: int | None = None
    cache_flush: bool = False
    zeros: float | None = None

    def __post_init__(self) -> None:
        if (self.rpc is None) != (self.device_key is None):
            raise ValueError("--rpc and --device-key go together (a tracker and a device key)")
        if self.rpc is not None:
            parse_rpc(self.rpc)
        self._builder = self._runner = None

    def variant(self, **changes) -> Measurer:
        """A measurer with ``changes`` (evaluator settings, ``zeros``) that shares this one's
        builder (its worker processes)."""
        other = dataclasses.replace(self, **changes)
        other._builder = self.builder
        return other

    @property
    def builder(self) -> ms.builder.Builder:
        """The local builder (its worker processes start on first use)."""
        if self._builder is None:
            self._builder = ms.builder.LocalBuilder(
                max_workers=self.max_workers, timeout_sec=BUILD_TIMEOUT_S, f_build=build_kernel
            )
        return self._builder

    @property
    def runner(self) -> ms.runner.Runner:
        """The local or RPC runner (started on first use)."""
        if self._runner is not None:
            return self._runner
        config = ms.runner.EvaluatorConfig(
            number=self.number,
            repeat=self.repeat,
            min_repeat_ms=self.min_repeat_ms,
            enable_cpu_cache_flush=self.cache_flush and self.rpc is not None,
        )
        if self.rpc is None:
            rotate = {"f_run_evaluator": run_rotating} if self.cache_flush else {}
            alloc = functools.partial(
                alloc_local, zeros=self.zeros, cold_bytes=COLD_BYTES if self.cache_flush else 0
            )
            self._runner = ms.runner.LocalRunner(
                timeout_sec=RUN_TIMEOUT_S, evaluator_config=config, f_alloc_argument=alloc, **rotate
            )
        else:
            host, port = parse_rpc(self.rpc)
            rpc_config = ms.runner.RPCConfig(
                tracker_host=host,
                tracker_port=port,
                tracker_key=self.device_key,
                session_timeout_sec=SESSION_TIMEOUT_S,
            )
            alloc = {}
            if self.zeros is not None:
                alloc["f_alloc_argument"] = functools.partial(alloc_rpc, zeros=self.zeros)
            self._runner = ms.runner.RPCRunner(
                rpc_config=rpc_config, evaluator_config=config, max_workers=1, **alloc
            )
        return self._runner

    def where(self) -> str:
        """``local`` or ``rpc KEY@HOST:PORT`` for reports."""
        return "local" if self.rpc is None else f"rpc {self.device_key}@{self.rpc}"

    def measure(self, mod, target, device_type: str, args_info: list) -> list[float]:
        """Build and run one scheduled module; its run times in seconds.

        Raises
        ------
        RuntimeError
            When the build or the run fails (the message says which, and why).
        """
        (built,) = self.builder.build([ms.builder.BuilderInput(mod, target)])
        if built.error_msg:
            raise RuntimeError(f"build failed: {built.error_msg}")
        try:
            (future,) = self.runner.run(
                [ms.runner.RunnerInput(built.artifact_path, device_type, args_info)]
            )
            result = future.result()
        finally:
            ms.utils.remove_build_dir(built.artifact_path)
        if result.error_msg:
            raise RuntimeError(f"run failed: {result.error_msg}")
        return [float(s) for s in result.run_secs]

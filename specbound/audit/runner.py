"""The audit's run loop: budgets, one certificate per distinct (kernel, layer geometry), rows
streamed as they finish, and a sound partial report on a spent budget or an interrupt.

* **Budgets.** ``max_seconds`` bounds the whole run (from the call of :func:`audit`),
  ``max_seconds_per_layer`` each :func:`specbound.certify` call; a layer gets the smaller of
  its own budget and what is left of the whole one. Once the whole budget is spent, every
  layer not yet certified gets the rigorous tap-sum upper bound (:func:`.fallback.tap_sum_upper`,
  lemma L-TAP: milliseconds, usually much wider than the norm) and the report is marked partial.
* **Dedup.** The certificate of a layer is keyed by a hash of its (folded) float64 kernel bytes,
  its shape, its geometry (:class:`~specbound.spec.ConvSpec`), ``rtol`` and the device; a later
  layer with the same key reuses it.
* **Streaming.** ``on_layer(row)`` is called with every row of the report, in report (graph)
  order, as soon as that row is final; rows without a certificate are final at once.
* **Interrupts.** A ``KeyboardInterrupt`` (from a certificate or from ``on_layer``) stops the
  certificates: every finished row is kept, the others get the tap-sum bound (or stay
  ``inf`` where no cheap bound exists), and the report is marked partial.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..certify import Certificate, certify
from ..spec import ConvSpec
from ._graph import _Op
from ._report import LayerBound
from .fallback import FallbackBound, tap_sum_upper
from .progress import _Progress

DEFAULT_RTOL = 1e-2
"""``rtol`` of :func:`audit` when none is given (the report says so)."""

DEFAULT_SECONDS_PER_LAYER = 120.0
"""``max_seconds_per_layer`` of :func:`audit` when none is given: no audit waits on one layer
for much longer (:func:`specbound.certify` honours its budget up to its own stated slack),
and the zero-padded 512-channel layers of an ImageNet ResNet-18 (a verified Cholesky test of
order 25088, about 50 s on one CPU thread) still converge at the default ``rtol``."""

UNBOUNDED_KINDS = ("sll",)
"""Operator kinds whose tasks are skipped once the run is stopped (their certificate has no
cheap fallback): their rows stay ``inf``. Convolutions and linear layers get the tap-sum bound
through :meth:`_Runner.certify`; the other tasks (averaging brackets of small 1-D matrices)
are cheap and always run."""


def _key(kernel: np.ndarray, spec: ConvSpec, rtol: float, device: str) -> tuple[Any, ...]:
    data = np.ascontiguousarray(kernel, dtype=np.float64)
    digest = hashlib.blake2b(memoryview(data).cast("B"), digest_size=20).hexdigest()  # no copy
    geometry = (spec.padding, spec.pad, spec.input_size, spec.stride, spec.dilation, spec.groups)
    return (digest, data.shape, repr(geometry), rtol, device)


class _Runner:
    """Runs the certificate tasks of an analysed graph (see the module docstring)."""

    def __init__(
        self,
        rtol: float,
        device: Any,
        max_seconds: float | None,
        max_seconds_per_layer: float | None,
        start: float,
        on_layer: Callable[[LayerBound], Any] | None,
        progress: _Progress,
    ) -> None:
        self.rtol, self.device = rtol, device
        self.max_seconds, self.per_layer = max_seconds, max_seconds_per_layer
        self.deadline = None if max_seconds is None else start + max_seconds
        self.on_layer, self.bar = on_layer, progress
        self.cache: dict[tuple[Any, ...], tuple[Certificate, str]] = {}
        self.stop_reason = ""
        self.current: LayerBound | None = None
        self.fallback_used = False
        self.certified = 0
        self.reused = 0
        self.fallbacks = 0

    # ------------------------------------------------------------------ budgets
    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.perf_counter()

    def layer_budget(self) -> float | None:
        left = self.remaining()
        if self.per_layer is None:
            return None if math.isinf(left) else max(left, 1e-3)
        return max(min(self.per_layer, left), 1e-3)

    def _spend_check(self) -> None:
        if not self.stop_reason and self.remaining() <= 0:
            self.stop_reason = f"the whole-run budget max_seconds={self.max_seconds:g} was spent"

    # ------------------------------------------------------------------ certificates
    def certify(self, kernel: np.ndarray, spec: ConvSpec) -> Certificate | FallbackBound:
        """The certificate of one layer: reused when the same (kernel, spec) was certified
        before, the tap-sum bound once the run is stopped, else :func:`specbound.certify`
        within the layer's budget."""
        key = _key(kernel, spec, self.rtol, str(self.device))
        row = self.current
        hit = self.cache.get(key)
        if hit is not None:
            cert, first = hit
            if row is not None and first == row.name:  # the same row, again after an interrupt
                return cert
            self.reused += 1
            if row is not None:
                row.notes.append(
                    f"same kernel and geometry as '{first}': its certificate is reused "
                    "(each distinct layer is certified once)"
                )
            return cert
        self._spend_check()
        if self.stop_reason:
            self.fallback_used = True
            self.fallbacks += 1
            return FallbackBound(tap_sum_upper(kernel, spec), self.stop_reason)
        cert = certify(
            kernel,
            spec,
            rtol=self.rtol,
            device=self.device,
            max_seconds=self.layer_budget(),
        )
        self.certified += 1
        self.cache[key] = (cert, row.name if row is not None else "?")
        return cert

    # ------------------------------------------------------------------ the loop
    def run(self, ops: list[_Op]) -> None:
        """Run every task of ``ops`` (the report's rows, in order) and stream the rows."""
        done: set[int] = set()
        notes = [list(op.row.notes) if op.row is not None else [] for op in ops]
        try:
            for i, op in enumerate(ops):
                if op.task is not None:
                    self._task(op, notes[i])
                done.add(i)
                self._emit(op.row)
        except KeyboardInterrupt:
            self.stop_reason = "interrupted (KeyboardInterrupt)"
        if not self.stop_reason:
            return
        for i, op in enumerate(ops):  # after an interrupt: bound what is left, quietly
            if i not in done and op.task is not None:
                self._task(op, notes[i])

    def _task(self, op: _Op, notes: list[str]) -> None:
        row = op.row
        assert row is not None and op.task is not None
        if not self.stop_reason:
            self._spend_check()
        if self.stop_reason and op.kind in UNBOUNDED_KINDS:
            row.upper, row.lower, row.converged = math.inf, None, False
            row.upper_method = row.lower_method = "none (not reached)"
            row.notes = [*notes, f"not certified ({self.stop_reason}): no cheap bound; inf"]
            self.bar.step(row.name)
            return
        self.current, self.fallback_used = row, False
        row.notes = list(notes)
        budget = None if self.stop_reason else self.layer_budget()
        self.bar.begin(row.name, budget)
        try:
            op.task()
        finally:
            self.current = None
        if self.fallback_used:
            row.kind, row.lower, row.certificate = "bound", None, None
        self.bar.step(row.name)

    def _emit(self, row: LayerBound | None) -> None:
        if row is not None and self.on_layer is not None:
            self.on_layer(row)

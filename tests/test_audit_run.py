"""The audit's run loop: budgets, one certificate per distinct layer, streaming, interrupts, the
default rtol, and the tap-sum fallback bound (lemma L-TAP) against exact float64 norms.

Every bound is compared one-sided and bare with the dense float64 operator
(:func:`specbound.operators.exact_norm`, :func:`~specbound.operators.conv_matrix`).
"""

from __future__ import annotations

import importlib
import math
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from specbound.operators import conv_matrix, exact_norm
from specbound.spec import ConvSpec
from specbound.testing import conv_specs

A = importlib.import_module("specbound.audit")
R = importlib.import_module("specbound.audit.runner")
P = importlib.import_module("specbound.audit.progress")


# ---------------------------------------------------------------------------- helpers
SIZE = (2, 6, 6)


def conv_chain(n: int, seed: int = 0) -> nn.Sequential:
    """``n`` distinct 2 -> 2 channel 3x3 zero-padded convolutions (an affine network)."""
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1, bias=False) for _ in range(n)]).eval()


def conv_exact(conv: nn.Conv2d, hw=SIZE[1:]) -> float:
    return exact_norm(conv.weight.detach().double().numpy(), ConvSpec.from_module(conv, hw))


def chain_exact(net: nn.Sequential, hw=SIZE[1:]) -> float:
    mat = np.eye(SIZE[0] * hw[0] * hw[1])
    for conv in net:
        mat = conv_matrix(conv.weight.detach().double(), ConvSpec.from_module(conv, hw)) @ mat
    return float(np.linalg.norm(mat, 2))


class CountingCertify:
    """Wraps the run loop's ``certify``: records every call (kernel shape, input size, budget),
    in the ``certify(kernel, spec)`` form or the keyword form."""

    def __init__(self, monkeypatch, before=None) -> None:
        self.real, self.calls, self.before = R.certify, [], before
        monkeypatch.setattr(R, "certify", self)

    def __call__(self, kernel, *args, **kwargs):
        spec = args[0] if args and isinstance(args[0], ConvSpec) else None
        size = spec.input_size if spec is not None else kwargs.get("input_size")
        self.calls.append((kernel.shape, size, kwargs.get("max_seconds")))
        if self.before is not None:
            self.before(len(self.calls))
        return self.real(kernel, *args, **kwargs)


# ---------------------------------------------------------------------------- L-TAP
@st.composite
def tap_layers(draw):
    shape, spec = draw(conv_specs(max_channels=3, max_kernel=3, max_size=6))
    kernel = draw(
        hnp.arrays(
            np.float64,
            shape,
            elements=st.floats(-4, 4, allow_nan=False, allow_subnormal=False),
        )
    )
    return kernel, spec


@given(tap_layers())
@example((np.ones((1, 1, 3, 3)), ConvSpec("zeros", "same", (6, 6))))
@example((np.ones((2, 1, 3, 3)), ConvSpec("reflect", "same", (2, 2), groups=2)))
@example((np.ones((1, 1, 2, 2)), ConvSpec("replicate", "full", (1, 1))))
def test_tap_sum_upper_bounds_the_dense_norm(layer):
    kernel, spec = layer
    assert A.tap_sum_upper(kernel, spec) >= exact_norm(kernel, spec)


def test_tap_sum_upper_is_not_trivially_huge_and_refuses_bad_input():
    # one tap, one channel: ||A|| = |k| exactly and the bound is |k| rounded up a few ulps
    value = A.tap_sum_upper(np.full((1, 1, 1, 1), 3.0), ConvSpec("zeros", "valid", (4, 4)))
    assert 3.0 <= value <= 3.0 * (1 + 1e-14)
    with pytest.raises(ValueError, match="input_size"):
        A.tap_sum_upper(np.ones((1, 1, 3, 3)), ConvSpec("zeros", "same", None))
    with pytest.raises(ValueError, match="NaN"):
        A.tap_sum_upper(np.full((1, 1, 3, 3), np.nan), ConvSpec("zeros", "same", (4, 4)))


@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 9), st.integers(1, 5), st.integers(1, 2), st.integers(1, 2)),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
    )
)
@example(np.full((2, 3, 1, 1), 2.82369958e-210))  # squares of the slices underflowed
@example(np.zeros((2, 3, 1, 1)))
def test_chunked_frobenius_bounds_memory_and_stays_an_upper_bound(kernel):
    spec = ConvSpec("zeros", "valid", (3, 3))
    whole = A.tap_sum_upper(kernel, spec)
    F = importlib.import_module("specbound.audit.fallback")
    previous, F.CHUNK_ENTRIES = F.CHUNK_ENTRIES, 4  # slices of a few rows
    try:
        chunked = A.tap_sum_upper(kernel, spec)
    finally:
        F.CHUNK_ENTRIES = previous
    assert chunked >= exact_norm(kernel, spec)
    # the same bound up to rounding allowances (relative, and a few subnormal steps)
    assert chunked <= whole * (1 + 1e-13) + 1e-320


# ---------------------------------------------------------------------------- budgets
BUDGET = 0.3
SLACK = 1.5
"""Stated slack of the whole-run budget in these tests: the one certify call running when the
budget ends may overrun its own ``max_seconds`` (certify's guarantee: by at most
``max(0.2 * budget, 1 s)``), plus milliseconds of tap-sum bounds and composition."""


def test_whole_run_budget_returns_in_time_with_a_sound_partial_report(monkeypatch):
    net = conv_chain(16)
    # each certificate takes at least 0.05 s, so 16 cannot fit in the 0.3 s budget whatever
    # the machine's speed (the verified core alone certifies these layers faster than that)
    CountingCertify(monkeypatch, before=lambda _: time.sleep(0.05))
    start = time.perf_counter()
    rep = A.audit(net, SIZE, rtol=1e-9, max_seconds=BUDGET)
    wall = time.perf_counter() - start
    assert wall <= BUDGET + SLACK
    assert rep.partial and "max_seconds" in rep.stop_reason and "PARTIAL" in rep.to_markdown()
    assert rep.to_dict()["partial"] is True and rep.budget["max_seconds"] == BUDGET
    fallback = [r for r in rep.layers if r.kind == "bound"]
    assert fallback, "16 layers of at least 0.05 s each cannot all be certified in 0.3 s"
    for row, conv in zip(rep.layers, net, strict=True):
        assert row.upper >= conv_exact(conv)  # every row, certified or not, is an upper bound
        if row.kind == "bound":
            assert row.lower is None and not row.converged and row.certificate is None
            assert "tap_sum" in row.upper_method and "max_seconds" in row.notes[-1]
        else:
            assert row.lower <= conv_exact(conv)
    assert rep.upper >= chain_exact(net)
    assert rep.lower is None  # an affine network's lower bound is skipped when stopped early


def test_layer_budget_is_the_smaller_of_its_own_and_what_is_left(monkeypatch):
    spy = CountingCertify(monkeypatch)
    A.audit(conv_chain(2), SIZE, max_seconds_per_layer=7.0)
    assert [c[2] for c in spy.calls] == [7.0, 7.0]
    spy.calls.clear()
    A.audit(conv_chain(2), SIZE, max_seconds=100.0, max_seconds_per_layer=None)
    assert all(50.0 < c[2] <= 100.0 for c in spy.calls)
    spy.calls.clear()
    A.audit(conv_chain(1), SIZE, max_seconds_per_layer=None)
    assert spy.calls[0][2] is None


def test_default_per_layer_budget_and_default_rtol_are_stated(monkeypatch):
    spy = CountingCertify(monkeypatch)
    rep = A.audit(conv_chain(1), SIZE)
    assert spy.calls[0][2] == R.DEFAULT_SECONDS_PER_LAYER > 0
    assert rep.rtol == 1e-2 and rep.rtol_default and rep.layers[0].certificate.rtol == 1e-2
    assert "rtol 0.01 (default)" in rep.to_markdown()
    assert "the audit's default" in " ".join(rep.notes)
    asked = A.audit(conv_chain(1), SIZE, rtol=1e-3)
    assert asked.rtol == 1e-3 and not asked.rtol_default
    assert "(default)" not in asked.to_markdown() and "as asked" in " ".join(asked.notes)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"max_seconds": 0}, ValueError, "max_seconds must be positive"),
        ({"max_seconds": -1.0}, ValueError, "max_seconds must be positive"),
        ({"max_seconds": math.nan}, ValueError, "max_seconds must be positive"),
        ({"max_seconds": "10"}, TypeError, "max_seconds must be a positive number"),
        ({"max_seconds_per_layer": 0.0}, ValueError, "max_seconds_per_layer must be positive"),
        ({"max_seconds_per_layer": True}, TypeError, "max_seconds_per_layer"),
        ({"on_layer": 3}, TypeError, "on_layer must be callable"),
        ({"rtol": 1.5}, ValueError, "rtol"),
    ],
)
def test_bad_budget_arguments_are_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        A.audit(conv_chain(1), SIZE, **kwargs)


# ---------------------------------------------------------------------------- dedup
def test_identical_layers_are_certified_once(monkeypatch):
    net = conv_chain(3)
    with torch.no_grad():
        net[2].weight.copy_(net[0].weight)  # layers 0 and 2: same kernel, same geometry
    spy = CountingCertify(monkeypatch)
    rep = A.audit(net, SIZE)
    assert len(spy.calls) == 2
    first, _, third = rep.layers
    assert third.certificate is first.certificate
    assert (third.lower, third.upper) == (first.lower, first.upper)
    assert any("reused" in note and "'0'" in note for note in third.notes)
    assert third.lower <= conv_exact(net[2]) <= third.upper
    assert "1 certificate(s) reused" in " ".join(rep.notes)


def test_same_kernel_at_another_size_is_certified_again(monkeypatch):
    conv = nn.Conv2d(2, 2, 3, bias=False)  # no padding: 6x6 -> 4x4 -> 2x2
    net = nn.Sequential(conv, conv).eval()
    spy = CountingCertify(monkeypatch)
    rep = A.audit(net, SIZE)
    assert [c[1] for c in spy.calls] == [(6, 6), (4, 4)]
    assert rep.layers[1].upper >= conv_exact(conv, (4, 4))


# ---------------------------------------------------------------------------- streaming
def test_rows_stream_in_report_order_as_each_finishes(monkeypatch):
    spy = CountingCertify(monkeypatch)
    net = nn.Sequential(
        nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.Flatten()
    )
    net.append(nn.Linear(2 * 36, 3))
    seen = []

    def on_layer(row):
        seen.append((row.name, row.upper, row.lower, len(spy.calls)))

    rep = A.audit(net, SIZE, on_layer=on_layer)
    assert [s[0] for s in seen] == [r.name for r in rep.layers] == ["0", "1", "2", "4"]
    assert [(s[1], s[2]) for s in seen] == [(r.upper, r.lower) for r in rep.layers]  # final
    # each certified row is streamed right after its own certificate, before the next one
    assert [s[3] for s in seen] == [1, 1, 2, 3]


def test_linear_layer_is_certified_as_a_1x1_convolution_on_a_1x1_input(monkeypatch):
    spy = CountingCertify(monkeypatch)
    torch.manual_seed(1)
    lin = nn.Linear(7, 5)
    rep = A.audit(nn.Sequential(lin), (7,))
    assert spy.calls[0][:2] == ((5, 7, 1, 1), (1, 1))
    exact = float(np.linalg.norm(lin.weight.detach().double().numpy(), 2))
    assert rep.layers[0].lower <= exact <= rep.layers[0].upper


# ---------------------------------------------------------------------------- interrupts
def test_keyboard_interrupt_from_the_callback_returns_the_partial_report():
    net = conv_chain(4)
    seen = []

    def on_layer(row):
        seen.append(row.name)
        if len(seen) == 2:
            raise KeyboardInterrupt

    rep = A.audit(net, SIZE, on_layer=on_layer)
    assert seen == ["0", "1"]  # nothing streamed after the interrupt
    assert rep.partial and "KeyboardInterrupt" in rep.stop_reason
    assert [r.kind for r in rep.layers] == ["certified", "certified", "bound", "bound"]
    for row, conv in zip(rep.layers, net, strict=True):
        assert row.upper >= conv_exact(conv)
    assert rep.layers[0].converged and not rep.layers[3].converged
    assert rep.upper >= chain_exact(net) and "PARTIAL" in rep.to_markdown()


def test_keyboard_interrupt_inside_a_certificate_bounds_that_layer(monkeypatch):
    def interrupt(n):
        if n == 2:
            raise KeyboardInterrupt

    CountingCertify(monkeypatch, before=interrupt)
    net = conv_chain(3)
    rep = A.audit(net, SIZE)
    assert [r.kind for r in rep.layers] == ["certified", "bound", "bound"]
    row = rep.layers[1]
    assert row.upper >= conv_exact(net[1]) and row.lower is None and row.certificate is None
    assert sum("KeyboardInterrupt" in note for note in row.notes) == 1
    assert rep.upper >= chain_exact(net)


def test_keyboard_interrupt_late_in_a_task_restarts_its_row_from_its_own_notes(monkeypatch):
    """Interrupted after the second layer's certificate and its geometry note: that row is
    finished again from its original notes (nothing duplicated) with the certificate it had
    already obtained."""
    L = importlib.import_module("specbound.audit.linear")
    real, calls = L._fold_allowance, []

    def fold_allowance(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(L, "_fold_allowance", fold_allowance)
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3, padding=1)
    )
    net.append(nn.BatchNorm2d(2))
    rep = A.audit(net.eval(), SIZE)
    assert [r.kind for r in rep.layers] == ["certified", "certified"] and rep.partial
    row = rep.layers[1]
    assert sum("zeros padding" in note for note in row.notes) == 1
    assert sum("folded" in note for note in row.notes) == 1
    assert not any("reused" in note for note in row.notes) and len(calls) == 3
    bn = net[3]
    scale = (bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)).detach()
    folded = net[2].weight.detach().double() * scale.view(-1, 1, 1, 1)
    exact = exact_norm(folded.numpy(), ConvSpec.from_module(net[2], SIZE[1:]))
    assert row.lower <= exact <= row.upper


# ---------------------------------------------------------------------------- progress
def test_progress_advances_within_a_long_layer(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(P, "TICK_S", 0.02)
    bar = P._Progress(2, True, "test")
    try:
        bar.begin("slow", 1.0)
        time.sleep(0.3)
        within = bar.bar.n
        bar.step("slow")
        after = bar.bar.n
    finally:
        bar.close()
    assert 0.0 < within < 1.0 and after == 1


def test_progress_heartbeat_without_tqdm(monkeypatch, capsys):
    monkeypatch.setattr(P, "TICK_S", 0.02)
    monkeypatch.setattr(P, "HEARTBEAT_S", 0.1)
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)
    bar = P._Progress(1, True, "test")
    try:
        bar.begin("slow", None)
        time.sleep(0.35)
        bar.step("slow")
    finally:
        bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[1/1] slow: ") and lines[0].endswith("s so far")
    assert lines[-1] == "[1/1] slow"
    assert not [t for t in threading.enumerate() if t.name == "specbound-audit-progress"]

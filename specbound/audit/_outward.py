"""Outward-rounded float arithmetic shared by the rules: ``_up`` / ``_down`` round a value
computed with ``ops`` roundings outwards."""

from __future__ import annotations

from ..rigorous.rounding import down, up


def _up(x: float, ops: int = 1) -> float:
    return up(float(x), ops)


def _down(x: float, ops: int = 1) -> float:
    return down(float(x), ops)

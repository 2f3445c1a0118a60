"""The floating-point environment the rounding analysis assumes, checked at run time.

The error bounds of :mod:`specbound.rigorous` assume IEEE-754 binary64 with **gradual
underflow**: a result below ``2^-1022`` is rounded to a subnormal (absolute error at most
``2^-1075``), not flushed to zero, and a subnormal operand is read as its value. A
flush-to-zero / denormals-are-zero setting (``torch.set_flush_denormal(True)``, a common
inference setting, or a library that sets the FTZ/DAZ bits of the CPU) breaks that: a kernel
of ``1e-310`` values then reads as zero. :func:`gradual_underflow` detects it by probing a
subnormal product and a subnormal operand in torch, numpy and Python floats;
:func:`gradual_underflow_guard` turns flush-to-zero off for the duration of a certificate (it
is per thread) and restores it afterwards, and refuses if it cannot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

_HALF_TINY = float.fromhex("0x0.8p-1022")  # 2^-1023, subnormal (parsed, not computed)
_SUBNORMAL = float.fromhex("0x1p-1060")


class FloatingPointEnvironmentError(RuntimeError):
    """The CPU flushes subnormal numbers to zero and this could not be switched off."""


def gradual_underflow() -> bool:
    """True if subnormal results and operands survive in torch, numpy and Python floats
    (float64, CPU, the calling thread)."""
    t_out = torch.tensor(2.0**-1022, dtype=torch.float64) * 0.5  # subnormal result
    t_in = torch.tensor(_SUBNORMAL, dtype=torch.float64) * 2.0**100  # subnormal operand
    n_out = np.float64(2.0**-1022) * np.float64(0.5)
    n_in = np.float64(_SUBNORMAL) * np.float64(2.0**100)
    p_out = 2.0**-1022 * 0.5
    # compared by bit pattern: under denormals-are-zero a float comparison would read the
    # expected subnormal as 0 too
    want_out, want_in = _HALF_TINY.hex(), (2.0**-960).hex()
    return (
        float(t_out).hex() == want_out
        and float(t_in).hex() == want_in
        and float(n_out).hex() == want_out
        and float(n_in).hex() == want_in
        and p_out.hex() == want_out
    )


@contextlib.contextmanager
def gradual_underflow_guard() -> Iterator[bool]:
    """Run the body with gradual underflow; yields whether flush-to-zero had to be switched
    off (it is switched back on at exit).

    Raises
    ------
    FloatingPointEnvironmentError
        when subnormals are flushed and ``torch.set_flush_denormal(False)`` does not restore
        gradual underflow (some other library set the CPU flags).
    """
    if gradual_underflow():
        yield False
        return
    torch.set_flush_denormal(False)
    try:
        if not gradual_underflow():
            raise FloatingPointEnvironmentError(
                "this thread flushes subnormal float64 numbers to zero (FTZ/DAZ) and "
                "torch.set_flush_denormal(False) did not switch it off; the rounding analysis "
                "of certify assumes gradual underflow (docs/certify.md, A1), so no "
                "certificate is given"
            )
        yield True
    finally:
        torch.set_flush_denormal(True)


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """Switch TF32 off in CUDA matmul and cuDNN for the duration, then restore both flags.

    With TF32 (10-bit mantissa, the cuDNN default on Ampere/Hopper) a float32 self-correlation
    or Gram product can move the result by ~1e-5 relative, in either direction, which no float32
    bound should absorb silently.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextlib.contextmanager
def one_cpu_thread(device: torch.device | str | None = None, active: bool = True) -> Iterator[None]:
    """Hold torch to one intra-op CPU thread for the duration (no effect for a CUDA
    ``device``, with ``active=False``, or when torch already runs one thread), then restore
    the thread count.

    For loops of many small operations (a thread synchronisation per call costs more than the
    work), and for loops that alternate torch with NumPy/SciPy BLAS calls: two thread pools
    spinning on the same cores (OpenMP's in torch, OpenBLAS's in NumPy) cost several times the
    work itself.
    """
    threads = torch.get_num_threads()
    if not active or torch.device(device or "cpu").type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

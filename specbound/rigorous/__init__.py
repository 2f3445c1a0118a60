"""Floating-point-sound building blocks for :func:`specbound.certify`.

Every function here returns a number that bounds a real-number quantity (the norm of the
operator defined by the kernel's float64 values as given) *including* the rounding errors of
its own computation, under the standard model of IEEE-754 binary64 arithmetic:

* each of ``+ - * / sqrt`` is correctly rounded (unit roundoff ``u = 2^-53``); fused
  multiply-adds only make errors smaller;
* a BLAS inner product of length ``n`` in any summation order satisfies
  ``|fl(x^T y) - x^T y| <= gamma_n |x|^T |y|`` with ``gamma_n = n u / (1 - n u)`` (Higham,
  *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Lemma 3.1 and §3.5); this holds
  for every conventional (non-Strassen) GEMM, on CPU and GPU, in float64;
* ``cos`` and ``sin`` are accurate to ``LIBM_ULPS`` units in the last place;
* gradual underflow (no flush-to-zero): checked, and enforced for the call, by
  :mod:`~specbound.rigorous.fpenv`; the power-of-two scalings handle subnormal blocks and the
  final scale-back rounds outward (:mod:`~specbound.rigorous.rounding`).

Upper bounds come from rigorous Gram iterations (:mod:`~specbound.rigorous.gram`) or, for a
given input size, from a verified block-banded Cholesky test of :math:`\\mu^2 I - A^TA
\\succeq 0` (:mod:`~specbound.rigorous.cholesky`, which also relies on correctly rounded
division and square root). The derivations are in ``docs/certify.md``; ``proofs_check``
checks each lemma on this code (the ``FP-*`` and ``CHOL-*`` entries of ``docs/proofs.md``).
"""

"""Certified robustness from logits and a Lipschitz constant: verified radii and certified
robust accuracy (also called verified robust accuracy, VRA).

Convention
----------
Let ``f`` map an input to ``C`` logits and be ``L``-Lipschitz from the L2 norm to the L2 norm
(``||f(x) - f(x')||_2 <= L ||x - x'||_2``; :func:`specbound.audit` certifies such an ``L``).
The margin of a correctly classified input of label ``y`` is
``m = f_y(x) - max_{j != y} f_j(x)``. Each difference ``f_y - f_j`` is ``sqrt(2) L``-Lipschitz,
because ``|(a - b)_y - (a - b)_j| <= ||e_y - e_j||_2 ||a - b||_2 = sqrt(2) ||a - b||_2``;
so no perturbation of L2 norm below

    ``r = m / (sqrt(2) L)``

changes the predicted class. This is the convention of Tsuzuku et al. (NeurIPS 2018) and of
the 1-Lipschitz network literature. It is tight: for ``f(x) = x`` in two dimensions
(``L = 1``) the closest input of another class is at distance exactly ``m / sqrt(2)``.
A misclassified input, or one whose top logit is tied, has radius 0.

An input counts as certified at radius ``eps`` when its radius is strictly larger than ``eps``
(``r > eps``): at ``r = eps`` a perturbation of norm ``eps`` can reach a tie.

Rounding: the margin, ``sqrt(2) L`` and the quotient are computed in float64 with outward
rounding (the radius is rounded down). The logits are taken as given: the rounding of the
network's own forward pass is not covered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["certified_accuracy", "certified_radius", "margins"]

SQRT2 = math.sqrt(2.0)


def _array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(
        value, "cpu"
    ):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if value.is_complex():
            raise TypeError(f"{name} must be real, got {value.dtype}")
        value = value.double().numpy() if value.is_floating_point() else value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array or a tensor: {err}") from None
    if array.dtype == object or np.iscomplexobj(array):
        raise TypeError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    return array


def _check(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _array(logits, "logits")
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be (N, C) with C >= 2 classes, got shape {z.shape}")
    z = z.astype(np.float64)  # exact for float16/32/64 and integers below 2**53
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite (found NaN or inf)")
    y = _array(labels, "labels")
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be N={z.shape[0]} integers (shape ({z.shape[0]},)), got dtype "
            f"{y.dtype} and shape {y.shape}"
        )
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must lie in [0, {z.shape[1] - 1}], got {y.min()}..{y.max()}")
    return z, y.astype(np.int64)


def _lipschitz(value: Any) -> float:
    bound = getattr(value, "upper", value)  # a Certificate or an AuditReport: its upper bound
    if isinstance(bound, bool) or not isinstance(bound, (int, float, np.floating, np.integer)):
        raise TypeError(f"lipschitz must be a number (or have .upper), got {type(value).__name__}")
    bound = float(bound)
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"lipschitz must be a finite number > 0, got {bound!r}")
    return bound


def margins(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """``f_y - max_{j != y} f_j`` per input, rounded down; negative or 0 when misclassified.

    Parameters
    ----------
    logits : array or torch.Tensor
        ``(N, C)`` real values, ``C >= 2``, finite.
    labels : array or torch.Tensor
        ``(N,)`` integers in ``[0, C)``.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64.

    References
    ----------
    * Y. Tsuzuku, I. Sato and M. Sugiyama, "Lipschitz-Margin Training: Scalable
      Certification of Perturbation Invariance for Deep Neural Networks", NeurIPS 2018
      (the radius ``margin / (sqrt(2) L)``).

    Examples
    --------
    >>> import numpy as np
    >>> from specbound.metrics import margins
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    >>> margins(logits, np.array([0, 1]))  # the second input is misclassified
    array([ 2., -2.])
    """
    z, y = _check(logits, labels)
    rows = np.arange(z.shape[0])
    true = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    best_other = others.max(axis=1)
    diff = true - best_other
    return np.nextafter(diff, -np.inf, where=diff != 0, out=diff.copy())


def certified_radius(
    logits: ArrayLike, labels: ArrayLike, lipschitz: float | ArrayLike
) -> np.ndarray:
    """The L2 radius ``margin / (sqrt(2) L)`` certified for each input (0 if misclassified).

    Parameters
    ----------
    logits, labels
        As in :func:`margins`.
    lipschitz : float, or an object with ``.upper``
        An upper bound ``L`` on the L2 Lipschitz constant of the logit map (for instance
        ``specbound.audit(model, shape).upper``), finite and > 0.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64, rounded down: no perturbation of smaller L2 norm changes the class.

    References
    ----------
    * Y. Tsuzuku, I. Sato and M. Sugiyama, "Lipschitz-Margin Training: Scalable
      Certification of Perturbation Invariance for Deep Neural Networks", NeurIPS 2018
      (the radius ``margin / (sqrt(2) L)``).

    Examples
    --------
    >>> import numpy as np
    >>> from specbound.metrics import certified_radius
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    >>> certified_radius(logits, np.array([0, 1]), 1.0)  # 2 / sqrt(2), and 0
    array([1.414214, 0.      ])
    """
    m = margins(logits, labels)
    lip = _lipschitz(lipschitz)
    denominator = np.nextafter(np.nextafter(SQRT2, np.inf) * lip, np.inf)
    radius = np.maximum(m, 0.0) / denominator
    return np.nextafter(radius, 0.0, where=radius > 0, out=radius.copy())


def certified_accuracy(
    logits: ArrayLike,
    labels: ArrayLike,
    lipschitz: float | ArrayLike,
    radius: float | Sequence[float],
) -> float | np.ndarray:
    """Certified robust accuracy: the fraction of inputs whose certified radius exceeds
    ``radius`` (``r > eps``; correctly classified with a positive margin at ``radius=0``).

    Parameters
    ----------
    logits, labels, lipschitz
        As in :func:`certified_radius`.
    radius : float or sequence of floats
        L2 radii ``>= 0``.

    Returns
    -------
    float or numpy.ndarray
        One accuracy in ``[0, 1]`` per radius (a float for a scalar ``radius``); NaN never
        appears (an empty batch is refused).

    References
    ----------
    * Y. Tsuzuku, I. Sato and M. Sugiyama, "Lipschitz-Margin Training: Scalable
      Certification of Perturbation Invariance for Deep Neural Networks", NeurIPS 2018
      (the radius ``margin / (sqrt(2) L)``).

    Examples
    --------
    >>> import numpy as np
    >>> from specbound.metrics import certified_accuracy
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    >>> certified_accuracy(logits, np.array([0, 1]), 1.0, 1.0)
    0.5
    >>> certified_accuracy(logits, np.array([0, 1]), 1.0, [0.0, 1.0, 1.5])
    array([0.5, 0.5, 0. ])
    """
    r = certified_radius(logits, labels, lipschitz)
    if r.size == 0:
        raise ValueError("logits must hold at least one input, got N=0")
    eps = np.asarray(radius, dtype=np.float64) if not isinstance(radius, bool) else None
    if eps is None or eps.ndim > 1 or not np.all(np.isfinite(eps)) or np.any(eps < 0):
        raise ValueError(
            f"radius must be a finite number >= 0 or a sequence of them, got {radius!r}"
        )
    acc = (r[None, :] > eps.reshape(-1, 1)).mean(axis=1)
    return float(acc[0]) if eps.ndim == 0 else acc

"""1-Lipschitz, gradient-norm-preserving activations for Lipschitz networks."""

from __future__ import annotations

import torch
from torch import nn


class MaxMin(nn.Module):
    """MaxMin / GroupSort(2) (Anil, Lucas & Grosse, ICML 2019): split the channels of ``dim``
    into two halves ``(a, b)`` and return ``(max(a, b), min(a, b))``.

    It permutes the entries of each pair, so it is 1-Lipschitz in the L2 norm and its Jacobian
    is a permutation (gradient-norm preserving) wherever it exists. Needs an even channel count.

    References
    ----------
    * C. Anil, J. Lucas and R. Grosse, "Sorting Out Lipschitz Function Approximation",
      ICML 2019 (GroupSort; MaxMin is GroupSort with groups of two).

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> layers.MaxMin()(torch.tensor([[1.0, -2.0, 3.0, 4.0]]))
    tensor([[ 3.,  4.,  1., -2.]])
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[self.dim] % 2:
            raise ValueError(
                f"MaxMin needs an even size along dim={self.dim}, got {tuple(x.shape)}"
            )
        a, b = x.chunk(2, dim=self.dim)
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

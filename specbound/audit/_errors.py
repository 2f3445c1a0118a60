"""The exception :func:`specbound.audit.audit` raises for a model it cannot audit."""

from __future__ import annotations


class AuditError(ValueError):
    """The model cannot be audited: it cannot be traced, the forward pass fails at the given
    input shape, or an operator has no Lipschitz rule."""

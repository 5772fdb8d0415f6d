"""QueryError: a query that cannot be run as asked (a 422 for the API, a usage error for the CLI)."""

from __future__ import annotations

from collections.abc import Iterable

from cloudtap.errors import CloudtapError


class QueryError(CloudtapError, ValueError):
    """A query names something unknown or asks for something out of bounds.

    Args:
        message: what is wrong, naming the offending value.
        field: the query field at fault (``metrics``, ``filters``, ``time_from``...).
        allowed: the names that would have been accepted, when there is such a list.
    """

    def __init__(self, message: str, field: str = "query", allowed: Iterable[str] | None = None) -> None:
        self.field = field
        self.allowed = sorted(allowed) if allowed is not None else None
        self.message = message
        super().__init__(message + (f"; allowed: {', '.join(self.allowed)}" if self.allowed else ""))

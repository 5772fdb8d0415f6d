"""AnalysisError: an analysis request that cannot be answered as asked (422 in the API, exit 2 in the CLI)."""

from __future__ import annotations

from cloudtap.server.query.errors import QueryError


class AnalysisError(QueryError):
    """Bad input to an analysis: an unknown name, a bad value, a window out of bounds.

    It is a :class:`QueryError` (so both are caught and reported the same way), with ``field`` naming
    the request field at fault and ``allowed`` the accepted values when there is such a list.
    """

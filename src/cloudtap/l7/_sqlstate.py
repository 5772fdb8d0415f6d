"""SQLSTATE classes to request status, shared by MySQL and PostgreSQL."""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import KERNEL_OPTS
from cloudtap.schema.request import REQ_CLIENT_ERROR, REQ_SERVER_ERROR

#: SQLSTATE classes caused by the statement or its data (syntax, access, constraint, data,
#: unsupported feature, invalid name): client errors. Every other class (connection, resources,
#: operator intervention, system, deadlock/serialization...) is a server error.
_CLIENT_CLASSES = np.frombuffer(b"420A2122233D3F44", np.uint8)


@njit(**KERNEL_OPTS)
def sqlstate_status(data: np.ndarray, pos: int) -> int:
    """REQ_CLIENT_ERROR or REQ_SERVER_ERROR for the 5-character SQLSTATE at ``pos``."""
    for k in range(0, _CLIENT_CLASSES.shape[0], 2):
        if data[pos] == _CLIENT_CLASSES[k] and data[pos + 1] == _CLIENT_CLASSES[k + 1]:
            return REQ_CLIENT_ERROR
    return REQ_SERVER_ERROR

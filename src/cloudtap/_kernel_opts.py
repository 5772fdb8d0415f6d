"""One place for numba flags, as STUMPY keeps its flags in config.py.

Every ``@njit`` in cloudtap uses ``**KERNEL_OPTS``. Turn on ``parallel`` or ``fastmath`` only with a
benchmark that justifies it.
"""

from __future__ import annotations

from typing import Any

KERNEL_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "boundscheck": False}

"""One place for numba flags, as STUMPY keeps its flags in config.py.

Every ``@njit`` in cloudtap uses ``**KERNEL_OPTS``. Turn on ``parallel`` or ``fastmath`` only with a
benchmark that justifies it.

Importing this module also does two things to numba's on-disk cache. It stamps cloudtap's cached
kernels with their whole import closure (:mod:`cloudtap._kernel_cache`: editing a helper module
recompiles the kernels that use it). And it makes numba load cached kernels without first importing
its whole compiler (see :func:`load_cached_kernels_directly`): a process that only runs cached
kernels, such as ``cloudtap meter F``, starts ~0.2 s sooner.
"""

from __future__ import annotations

from typing import Any

from cloudtap import _kernel_cache

KERNEL_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "boundscheck": False}


def load_cached_kernels_directly() -> bool:
    """Load numba's on-disk cache without the compiler's registries; True when installed.

    numba's ``Cache.load_overload`` calls ``target_context.refresh()`` before reading the cache
    file. The refresh imports and installs every typing and lowering registry (numba.np.linalg,
    arraymath, typed containers, random, ...): ~0.2-0.3 s, a third of a small capture's whole run,
    and none of it is used to load object code that was already compiled. Only the runtime (NRT)
    must be set up first, because the loaded code links against it. A cache miss still compiles
    as before: numba's compiler refreshes the contexts itself (``CompilerBase.__init__``).
    """
    try:
        from numba.core import caching
        from numba.core.runtime import nrt
    except ImportError:  # pragma: no cover - numba is a hard dependency
        return False
    original = caching.Cache.load_overload
    if getattr(original, "cloudtap_direct", False):
        return True

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        nrt.rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
        return None  # the guard swallowed a spurious I/O error: numba compiles instead

    if not all(
        hasattr(caching.Cache, name) for name in ("_guard_against_spurious_io_errors", "_load_overload")
    ):
        return False  # a numba whose cache is shaped differently keeps its own path
    load_overload.cloudtap_direct = True  # type: ignore[attr-defined]
    caching.Cache.load_overload = load_overload  # type: ignore[method-assign]
    return True


load_cached_kernels_directly()
_kernel_cache.install()

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

import re
from typing import Any

from cloudtap import _kernel_cache

KERNEL_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "boundscheck": False}
#: For kernels that never allocate (they fill arrays their caller made): numba's runtime is left out,
#: so array arguments are not reference-counted (an atomic increment and decrement per call of an
#: njit function that takes arrays) and the cached code loads without setting the runtime up
#: (~14 ms per process). numba refuses to compile such a kernel if it does allocate.
NO_ALLOC_OPTS: dict[str, Any] = {**KERNEL_OPTS, "_nrt": False}


#: Names only code that uses numba's runtime refers to: its C API and compiled helpers (``NRT_*``,
#: ``nrt_*``, ``_nrt_*``) and the stubs of symbols resolved at run time.
_RUNTIME_NAMES = re.compile(rb"(?i)nrt_|\.numba\.unresolved\$")
_OBJECT_MAGIC = b"\x7fELF"


def needs_runtime(data: object) -> bool:
    """True unless the cached kernel ``data`` holds object code that names nothing of numba's runtime.

    A function the object code calls is named in its symbol table, so an object that never names the
    runtime cannot reach it. Data without recognisable object code counts as needing it.
    """
    stack, found_object = [data], False
    while stack:
        item = stack.pop()
        if isinstance(item, bytes | bytearray):
            if _RUNTIME_NAMES.search(item):
                return True
            found_object = found_object or bytes(item[:4]) == _OBJECT_MAGIC
        elif isinstance(item, tuple | list):
            stack.extend(item)
    return not found_object


def load_cached_kernels_directly() -> bool:
    """Load numba's on-disk cache without the compiler's registries; True when installed.

    numba's ``Cache.load_overload`` calls ``target_context.refresh()`` before reading the cache
    file. The refresh imports and installs every typing and lowering registry (numba.np.linalg,
    arraymath, typed containers, random, ...): ~0.2-0.3 s, a third of a small capture's whole run,
    and none of it is used to load object code that was already compiled. The runtime (NRT) is set
    up first only for code that links against it (:func:`needs_runtime`): compiling its functions
    costs ~14 ms per process, and the metering kernels never allocate. A cache miss still compiles
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
        with self._guard_against_spurious_io_errors():
            if not all(hasattr(self, n) for n in ("_enabled", "_cache_file", "_index_key", "_impl")):
                nrt.rtsys.initialize(target_context)  # a cache shaped differently: numba's own load
                return self._load_overload(sig, target_context)
            if not self._enabled:
                return None
            data = self._cache_file.load(self._index_key(sig, target_context.codegen()))
            if data is None:
                return None
            if needs_runtime(data):
                nrt.rtsys.initialize(target_context)
            return self._impl.rebuild(target_context, data)
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

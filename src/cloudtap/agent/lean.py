"""Keep the agent process lean: libraries it never uses stay unloaded, code it used only at start is let go.

:func:`keep_pandas_out`: pyarrow imports pandas whenever it is installed (a dev or server venv;
``cloudtap[agent]`` does not pull it) on array conversions, ``to_numpy()`` and ``group_by()``,
only to recognise pandas inputs: +50 MiB resident and +300 modules the agent never uses.

:func:`release_startup_pages`: LLVM (``libllvmlite.so``, 150 MB of machine code) runs only while the
kernels load from numba's cache; loading it maps ~70 MiB of its code into the process (static
initialisers spread over the whole library, each page fault mapping its neighbours too). Once every
kernel is loaded those pages are not used again, yet they stay in the resident set.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import logging
import re
import sys

log = logging.getLogger(__name__)

_MADV_DONTNEED = 4
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


class _NoPandas(importlib.abc.MetaPathFinder):
    """An import hook under which ``import pandas`` (and its submodules) fails."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"{name}: not loaded in the agent (cloudtap.agent.lean)")


def keep_pandas_out() -> bool:
    """Stop pyarrow from loading pandas in this process; returns whether the block is in place.

    For a process that is only an agent (``cloudtap agent run``, the footprint bench): an import hook
    makes ``import pandas`` fail for good, so pyarrow's array conversions, ``to_numpy()`` and
    ``group_by()`` (which load pandas whenever it is installed, to recognise pandas inputs) run
    without it. Does nothing when pandas is already loaded. Do not use it in a process that also
    needs pandas (e.g. chDB's result conversion).
    """
    if "pandas" in sys.modules:
        return False
    if not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())
    return True


def _read_only_file_mappings(names: tuple[str, ...]) -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of this process's mappings of files whose path contains one of ``names``
    that are not writable and hold no private (copy-on-write) page: their pages are the file's, unchanged."""
    found: list[tuple[int, int, int]] = []
    current: list[int] | None = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = _MAPPING.match(line)
            if head:
                start, end, perms, path = head.groups()
                wanted = "w" not in perms and perms.endswith("p") and any(n in path for n in names)
                current = [int(start, 16), int(end, 16), 0, 0] if wanted else None
                if current is not None:
                    found.append(current)  # type: ignore[arg-type]
            elif current is not None and line.startswith(("Rss:", "Anonymous:")):
                current[2 if line.startswith("Rss:") else 3] = int(line.split()[1]) * 1024
    return [(start, end, rss) for start, end, rss, anon in found if anon == 0]  # type: ignore[misc]


def release_startup_pages(names: tuple[str, ...] = ("libllvmlite",)) -> int:
    """Drop from the resident set the code pages of libraries used only at start; returns the bytes dropped.

    For a process that is only an agent, after every kernel is loaded (``warm_up()`` and the request
    parser's warm-up). Only mappings that are read-only and hold no private page are touched
    (``MADV_DONTNEED``): their contents are the file's, so nothing is lost. The pages stay in the page
    cache, shared and reclaimable; if the library runs again (a kernel compiled or loaded later) they
    fault back in from there. Linux only: elsewhere, or when ``/proc`` is unreadable, does nothing.
    """
    try:
        mappings = _read_only_file_mappings(names)
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError) as exc:
        log.debug("release_startup_pages: not available here (%s)", exc)
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for start, end, rss in mappings:
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += rss
    return released

"""RingRegion: one reserved span of address space into which all rings of a source are mapped.

Zero copy across rings: the rings are mapped side by side (``mmap`` with ``MAP_FIXED`` into slots of a
``PROT_READ`` anonymous reservation), so frames of several interfaces share one ``FrameBatch.data``
view. Unused slots read as zeros, never fault. A reservation is unmapped only when the last view of
it is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os

import numpy as np

_PROT_READ, _PROT_WRITE = mmap.PROT_READ, mmap.PROT_WRITE
_MAP_SHARED, _MAP_PRIVATE, _MAP_ANONYMOUS = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
_MAP_FIXED = 0x10
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _mmap(addr: int | None, size: int, prot: int, flags: int, fd: int) -> int:
    got = _libc.mmap(addr, size, prot, flags, fd, 0)
    if got is None or got == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    if addr is not None and got != addr:
        _libc.munmap(got, size)
        raise OSError(errno.EINVAL, "mmap: fixed mapping landed elsewhere")
    return int(got)


class _Unmapper:
    """Unmaps a reservation when the last view of it is freed."""

    def __init__(self, addr: int, size: int) -> None:
        self.addr, self.size = addr, size

    def __del__(self) -> None:
        _libc.munmap(self.addr, self.size)


class RingRegion:
    """A reserved span of address space with one ring-sized slot per interface."""

    def __init__(self, slot_size: int, slots: int) -> None:
        size = slot_size * slots
        flags = _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE
        addr = _mmap(None, size, _PROT_READ, flags, -1)
        buf_type = type("_RegionBytes", (ctypes.c_uint8 * size,), {})
        buf = buf_type.from_address(addr)
        buf.owner = _Unmapper(addr, size)  # lives as long as any numpy view of buf
        self.addr, self.slot_size, self.slots = addr, slot_size, slots
        self.v8 = np.frombuffer(buf, np.uint8)
        self.v32 = self.v8.view(np.uint32)

    def map_ring(self, slot: int, fd: int) -> None:
        """Map the ring of socket ``fd`` into ``slot``."""
        _mmap(
            self.addr + slot * self.slot_size,
            self.slot_size,
            _PROT_READ | _PROT_WRITE,
            _MAP_SHARED | _MAP_FIXED,
            fd,
        )

    def clear(self, slot: int) -> None:
        """Replace whatever is mapped in ``slot`` by zero pages (frees a ring's memory)."""
        flags = _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_FIXED | _MAP_NORESERVE
        _mmap(self.addr + slot * self.slot_size, self.slot_size, _PROT_READ, flags, -1)

    def view(self, slots_used: int) -> np.ndarray:
        """Read-only view of the first ``slots_used`` slots (what a FrameBatch holds)."""
        out = self.v8[: slots_used * self.slot_size].view()
        out.flags.writeable = False
        return out

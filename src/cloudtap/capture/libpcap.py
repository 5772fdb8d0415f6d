"""libpcap through ctypes: loaded once, it compiles a tcpdump-syntax expression into classic BPF instructions.

Only the compiler is used (on a dead handle of the given link type); the programs run in cloudtap's numba
VM or the kernel (``capture/bpf.py``). ``BpfInsn`` is ``struct bpf_insn``, the layout of one instruction.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from cloudtap.errors import CloudtapError, FilterError

PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF

# pcap LINKTYPE_* values whose DLT_* value (what pcap_open_dead takes) differs on Linux.
_LINKTYPE_TO_DLT = {100: 11, 101: 12, 102: 15, 103: 16, 106: 19}


class BpfInsn(ctypes.Structure):
    """``struct bpf_insn`` (the kernel's ``struct sock_filter``): one classic BPF instruction."""

    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(BpfInsn))]


_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def load_libpcap() -> ctypes.CDLL:
    """Load libpcap once and declare the few functions used here."""
    global _lib
    if _lib is not None:
        return _lib
    names = [n for n in (ctypes.util.find_library("pcap"), "libpcap.so.0.8", "libpcap.so.1") if n]
    lib = None
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise CloudtapError(
            "libpcap not found (tried " + ", ".join(names) + "); install it, e.g. apt-get install libpcap0.8"
        )
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.restype = None
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_close.restype = None
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    _lib = lib
    return lib


def compile_to_instructions(expression: str, linktype: int, snaplen: int, optimize: bool) -> bytes:
    """The ``struct bpf_insn`` array libpcap compiles ``expression`` into, as bytes.

    Raises:
        FilterError: libpcap rejects the expression (its message and the expression are included).
        CloudtapError: libpcap cannot be loaded.
    """
    lib = load_libpcap()
    dlt = _LINKTYPE_TO_DLT.get(int(linktype), int(linktype))
    with _lib_lock:
        handle = lib.pcap_open_dead(dlt, int(snaplen))
        if not handle:
            raise FilterError(f"cannot compile {expression!r}: pcap_open_dead({dlt}) failed")
        try:
            prog = _BpfProgram()
            rc = lib.pcap_compile(
                handle, ctypes.byref(prog), expression.encode(), int(bool(optimize)), PCAP_NETMASK_UNKNOWN
            )
            if rc != 0:
                msg = (lib.pcap_geterr(handle) or b"unknown error").decode(errors="replace")
                raise FilterError(f"cannot compile filter {expression!r} for linktype {linktype}: {msg}")
            try:
                n = int(prog.bf_len)
                return ctypes.string_at(prog.bf_insns, n * ctypes.sizeof(BpfInsn))
            finally:
                lib.pcap_freecode(ctypes.byref(prog))
        finally:
            lib.pcap_close(handle)

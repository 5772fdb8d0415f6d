# mypy: disable-error-code="no-untyped-def, assignment, call-overload"
"""Numba header walkers: raw frames in, one ``PACKET_DTYPE`` row per frame out.

The walk is a small state machine: each layer function reads one header, fills the row and
returns ``(next_layer, next_position)``. Positions are absolute indices into the batch buffer;
``end`` is one past the last captured byte of the frame and every read is checked against it.
Layer functions never raise: a short header sets ``STATUS_TRUNCATED``, a self-contradicting one
``STATUS_MALFORMED``, and the walk stops (``_L_DONE``).

The layers live in ``_walk`` (states, reads, row bookkeeping), ``_link_kernels``, ``_ip_kernels`` and
``_tunnel_kernels``; this module runs the walk. The cached kernel is stamped with all of them
(``cloudtap._kernel_cache``), so an edit to any layer recompiles it.

Tunnels are entered only when decapsulation depth allows it, the outer packet is not an IP
fragment and the tunnel header is fully captured and valid; entering copies the current IP
addresses to ``tunnel_src/dst`` and clears the inner fields (see ``_enter_tunnel``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cloudtap._kernel_opts import NO_ALLOC_OPTS
from cloudtap.decode._ip_kernels import (
    _ipv4,
    _ipv6,
    _transport,
)
from cloudtap.decode._link_kernels import (
    _ethernet,
    _ip_by_nibble,
    _link,
    _mpls,
    _nflog,
    _null,
    _pbb,
    _ppp_proto,
    _pppoe,
    _sll,
    _sll2,
)
from cloudtap.decode._tunnel_kernels import (
    _geneve,
    _gre,
    _gre_udp,
    _gtpu,
    _mpls_udp,
    _teredo,
    _vxlan,
)
from cloudtap.decode._walk import (
    _INLINE,
    _L_DONE,
    _L_ETH,
    _L_GENEVE,
    _L_GRE,
    _L_GRE_UDP,
    _L_GTPU,
    _L_IPGUESS,
    _L_IPV4,
    _L_IPV6,
    _L_MPLS,
    _L_MPLS_UDP,
    _L_NFLOG,
    _L_NULL,
    _L_PBB,
    _L_PPP,
    _L_PPPOE,
    _L_SLL,
    _L_SLL2,
    _L_TEREDO,
    _L_TRANSPORT,
    _L_VXLAN,
    _MAX_LAYERS,
    _reset_row,
    _stop,
)
from cloudtap.schema.packet import (
    STATUS_MALFORMED,
    STATUS_TRUNCATED,
)


# --- drivers -------------------------------------------------------------------------------------
@njit(**_INLINE)
def decode_frame(data, start, end, wire, lt, port_kind, max_depth, rec):
    """Decode one frame ``data[start:end]`` into ``rec``, decapsulating at most ``max_depth`` tunnels."""
    _reset_row(rec)
    layer, pos = _link(data, start, end, lt, rec)
    l3 = start
    for _ in range(_MAX_LAYERS):
        if layer == _L_DONE:
            return
        if layer == _L_ETH:
            layer, pos = _ethernet(data, pos, end, rec)
        elif layer == _L_IPV4:
            l3 = pos
            layer, pos = _ipv4(data, pos, end, start, wire, rec)
        elif layer == _L_IPV6:
            l3 = pos
            layer, pos = _ipv6(data, pos, end, start, wire, rec)
        elif layer == _L_TRANSPORT:
            layer, pos = _transport(data, pos, end, start, l3, rec, port_kind, max_depth)
        elif layer == _L_VXLAN:
            layer, pos = _vxlan(data, pos, end, rec)
        elif layer == _L_GENEVE:
            layer, pos = _geneve(data, pos, end, rec)
        elif layer == _L_GRE:
            layer, pos = _gre(data, pos, end, rec)
        elif layer == _L_MPLS:
            layer, pos = _mpls(data, pos, end, rec)
        elif layer == _L_IPGUESS:
            layer, pos = _ip_by_nibble(data, pos, end, rec, STATUS_MALFORMED)
        elif layer == _L_PPPOE:
            layer, pos = _pppoe(data, pos, end, rec)
        elif layer == _L_PBB:
            layer, pos = _pbb(data, pos, end, rec)
        elif layer == _L_SLL:
            layer, pos = _sll(data, pos, end, rec)
        elif layer == _L_SLL2:
            layer, pos = _sll2(data, pos, end, rec)
        elif layer == _L_NULL:
            layer, pos = _null(data, pos, end, rec)
        elif layer == _L_PPP:
            layer, pos = _ppp_proto(data, pos, end, rec)
        elif layer == _L_GTPU:
            layer, pos = _gtpu(data, pos, end, rec)
        elif layer == _L_TEREDO:
            layer, pos = _teredo(data, pos, end, rec)
        elif layer == _L_GRE_UDP:
            layer, pos = _gre_udp(data, pos, end, rec)
        elif layer == _L_MPLS_UDP:
            layer, pos = _mpls_udp(data, pos, end, rec)
        elif layer == _L_NFLOG:
            layer, pos = _nflog(data, pos, end, rec)
        else:
            layer = _stop(rec, STATUS_MALFORMED)
    rec.status = STATUS_MALFORMED  # header chain longer than any sane frame


@njit(**NO_ALLOC_OPTS)
def decode_batch(
    data, offset, cap_len, wire_len, ts_ns, linktype, interface, port_kind, max_depth, out, counts
):
    """Decode every frame of a batch into ``out`` (``PACKET_DTYPE``, one row per frame).

    ``counts[status]`` is incremented once per frame (the caller's running totals per status).

    A tunnel whose inner packet turns out malformed, or cut before its IP header, is reported
    as the tunnel packet itself: the frame is decoded again with one tunnel level less.
    """
    size = data.shape[0]
    for i in range(offset.shape[0]):
        start = offset[i]
        cap = np.int64(cap_len[i])
        if start < 0 or start > size:
            start = size
            cap = 0
        if cap > size - start:
            cap = size - start
        end = start + cap
        rec = out[i]
        depth = max_depth
        lt = linktype[i]
        wire = wire_len[i]
        while True:
            decode_frame(data, start, end, wire, lt, port_kind, depth, rec)
            if rec.tunnel_depth == 0:
                break
            st = rec.status
            if st == STATUS_MALFORMED or (st == STATUS_TRUNCATED and rec.ip_ver == 0):
                depth = np.int64(rec.tunnel_depth) - 1
            else:
                break
        rec.ts_ns = ts_ns[i]
        rec.wire_len = wire
        rec.cap_len = cap
        rec.frame_index = i
        rec.interface = interface[i]
        counts[rec.status] += 1

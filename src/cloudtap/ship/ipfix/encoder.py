"""IpfixEncoder: flow records to IPFIX messages (RFC 7011, biflows per RFC 5103), templates and sequence.

The numba kernel writes whole messages into one preallocated buffer; Python sees only messages. On
UDP the templates are re-sent every ``refresh_messages`` messages and every ``refresh_s`` seconds
(RFC 7011 §8.4); on TCP once per connection (call :meth:`IpfixEncoder.restart_templates` after a
reconnect). The sequence number counts data records, per observation domain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from cloudtap.errors import ConfigError
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.ship.ipfix._kernels import encode_messages
from cloudtap.ship.ipfix.elements import MESSAGE_HEADER_LEN, RECORD_LEN_V6, SET_HEADER_LEN, template_set

#: Default largest IPFIX message on UDP (fits a 1500-byte path with IP/UDP headers and tunnels).
DEFAULT_MTU = 1400
#: Largest IPFIX message (16-bit length field).
MAX_MESSAGE = 65535
#: Messages encoded per kernel call (bounds the buffer: ~1.4 MB at the default MTU).
BATCH_MESSAGES = 1024


class IpfixEncoder:
    """Stateful encoder for one export stream (one collector, one observation domain)."""

    def __init__(
        self,
        mtu: int = DEFAULT_MTU,
        refresh_messages: int = 100,
        refresh_s: float = 60.0,
        domain_id: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.templates = np.frombuffer(template_set(), dtype=np.uint8).copy()
        smallest = MESSAGE_HEADER_LEN + len(self.templates) + SET_HEADER_LEN + RECORD_LEN_V6
        if not smallest <= mtu <= MAX_MESSAGE:
            raise ConfigError(f"ipfix mtu {mtu}: must be between {smallest} and {MAX_MESSAGE} bytes")
        if refresh_messages < 0 or refresh_s <= 0:
            raise ConfigError("ipfix template refresh: messages >= 0 (0: never by count) and seconds > 0")
        if not 0 <= domain_id < 1 << 32:
            raise ConfigError(f"ipfix observation domain id {domain_id}: must fit 32 bits")
        self.mtu = mtu
        self.refresh_messages = refresh_messages
        self.refresh_s = refresh_s
        self.domain_id = domain_id
        self.clock = clock
        self.sequence = 0  #: data records sent so far (next message's sequence number, mod 2**32)
        self.messages = 0
        self.template_sends = 0
        self._since_templates = 0
        self._templates_at: float | None = None  # None: templates are due in the next message
        self._buf = np.empty(BATCH_MESSAGES * mtu, dtype=np.uint8)
        self._offsets = np.zeros(BATCH_MESSAGES + 1, dtype=np.int64)
        self._counts = np.zeros(BATCH_MESSAGES, dtype=np.int64)

    def restart_templates(self) -> None:
        """Put the templates in the next message (a new connection, or a collector restart)."""
        self._templates_at = None

    def messages_for(self, flows: np.ndarray) -> Iterator[tuple[memoryview, int]]:
        """IPFIX messages carrying ``flows`` (``FLOW_DTYPE``) in order, with their data record counts.

        Each yielded view is valid until the next one is requested (the buffer is reused).
        """
        if flows.dtype != FLOW_DTYPE:
            raise TypeError(f"expected FLOW_DTYPE, got {flows.dtype}")
        flows = np.ascontiguousarray(flows)
        view = memoryview(self._buf)
        first = 0
        while first < len(flows):
            now = self.clock()
            force = self._templates_at is None or now - self._templates_at >= self.refresh_s
            first, count, self.sequence, self._since_templates, templated = encode_messages(
                flows, first, self.templates, self.refresh_messages, self._since_templates, force,
                self.mtu, int(now), self.sequence, self.domain_id, self._buf, self._offsets, self._counts,
            )  # fmt: skip
            self.sequence &= 0xFFFF_FFFF
            if templated:
                self._templates_at = now
                self.template_sends += templated
            self.messages += count
            offsets, counts = self._offsets, self._counts
            for m in range(count):  # per message
                yield view[offsets[m] : offsets[m + 1]], int(counts[m])


def warm_up_kernel() -> None:
    """Load (or compile) the encoder kernel on one record: for the agent's ``warm_up``."""
    for _ in IpfixEncoder().messages_for(np.zeros(1, FLOW_DTYPE)):
        pass

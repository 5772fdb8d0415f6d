"""The findings engine: the analyses run on a schedule over what is stored, reporting what changed.

Kinds: ``new_edge``, ``new_port``, ``burst``, ``periodic_transfer``, ``scan``, ``handshake_failures``,
``retransmission_spike``, ``lb_imbalance``, ``isolation_crossing``, ``slow_requests`` (docs/findings.md).
The engine (:mod:`.engine`) runs each minute (:mod:`.loop`), stores deduplicated findings (:mod:`.store`,
tables in :mod:`.ddl`), and delivers them through the API, the CLI, ``/metrics`` and an Alertmanager
webhook (:mod:`.webhook`). Import the submodules; this package module stays light (settings import it).
"""

from cloudtap.server.findings.config import FindingsSection

__all__ = ["FindingsSection"]

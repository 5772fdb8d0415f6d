"""Agent: wires sources, workers, guards, the interface watcher, output and the control endpoint.

Threads (see docs/architecture.md):

- ``capture-N``: one per worker; owns its source, decoder, fragment table and meter.
- ``watcher``: follows VM interfaces over netlink and adds/removes them on the workers' sources
  (:mod:`cloudtap.agent.sources`, which also opens each worker's source).
- ``housekeeping`` (the caller's thread in :meth:`Agent.run`): once a second checks breakers and
  memory, rotates output, aggregates edge deltas into 1 s / 1 min edges, refreshes the status.
- ``control`` / ``control-socket``: the HTTP endpoint over TCP (key required) and the Unix socket.

Exit status (``cloudtap agent run``; systemd's ``Restart=on-failure`` restarts on non-zero): 0 when
asked to stop (SIGTERM from ``systemctl stop``, SIGINT) or when a replay ends; :data:`EXIT_RESTART` (75,
EX_TEMPFAIL) when ``POST /shutdown`` asks the agent to go (to apply restart-required config, or because
it is in trouble), so its service manager starts it again; 1 when it cannot start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from cloudtap.agent.budget import initial_flows_for, plan_budget, request_parser_bytes
from cloudtap.agent.config import AgentConfig
from cloudtap.agent.config_apply import policy_filter_of
from cloudtap.agent.guard import CpuGovernor, HostBreakers, PpsLimiter, RssWatch
from cloudtap.agent.identity import ObservationPoints
from cloudtap.agent.lean import release_startup_pages
from cloudtap.agent.mirror_attribution import MirrorAttribution
from cloudtap.agent.output import RecordOutput
from cloudtap.agent.requests import request_config, request_status, warm_up_requests
from cloudtap.agent.sinks import RecordSink, record_sink
from cloudtap.agent.sources import PacketSources
from cloudtap.agent.status import AgentStatus
from cloudtap.agent.warmup import warm_up
from cloudtap.agent.worker import CaptureWorker
from cloudtap.capture.source import PacketSource

log = logging.getLogger(__name__)
#: exit status of an agent asked to stop so that it is started again (EX_TEMPFAIL)
EXIT_RESTART = 75


class Agent:
    """The cloudtap agent. ``run()`` blocks until :meth:`shutdown` (or a signal) is called."""

    def __init__(
        self,
        config: AgentConfig,
        sink: RecordSink | None = None,
        source_factory: Callable[[int], PacketSource] | None = None,
    ) -> None:
        from cloudtap.agent.control import ControlKeys
        from cloudtap.agent.credentials import credential_store

        self.base_config = config  #: as started; the controller client lays its overlay over this
        if config.controller.url:
            from cloudtap.agent.controller_client import with_cached_config

            config = with_cached_config(config)  # the last controller config, while the server is unreachable
        self.config = config
        self.agent_id = config.agent_id or socket.gethostname()
        self.credentials = credential_store(config)  #: what the controller issued (None: standalone)
        self.control_keys = ControlKeys(config.control.key_file, self.credentials)
        self.exit_code = 0  #: what ``cloudtap agent run`` exits with (see the module doc)
        mirror = MirrorAttribution(config.mirror.sessions) if config.capture.mode == "mirror" else None
        # mirror mode: copies attributed to VMs (config.mirror)
        self.points = ObservationPoints(mirror=mirror)
        cap = config.capture
        n_workers = cap.workers if cap.mode == "interfaces" else 1
        self.request_config = request_config(config)  #: None: requests are not parsed (config.requests)
        self.policy_filter = policy_filter_of(config)  #: per-policy snap lengths (None: capture.bpf only)
        budget = plan_budget(
            config.limits,
            interfaces_hint=max(4, len(cap.interfaces)),
            snaplen=max(cap.snaplen, self.policy_filter.max_snaplen if self.policy_filter else 0),
            workers=n_workers,
            ring_block_size=cap.ring_block_size,
            ring_block_count=cap.ring_block_count,
            request_bytes=request_parser_bytes(self.request_config) if self.request_config else 0,
        )
        max_flows = min(config.meter.max_flows, budget.max_flows)
        self.meter_config = config.meter.model_copy(
            update={
                "max_flows": max_flows,
                "initial_flows": initial_flows_for(max_flows),
                "key_by_interface": True,
                "output_batch": budget.output_batch,
            }
        )
        self.budget = budget
        out = config.output
        self.sink = sink or self._default_sink()
        self.output = RecordOutput(self.sink, self.points, self.agent_id, out.edge_intervals_s)
        from cloudtap.ship.ipfix.sink import IpfixTee

        # collectors beside the sink (docs/ipfix.md); None: none
        self.ipfix = IpfixTee.from_settings(out.ipfix)
        if self.ipfix is not None:
            self.output.on_records = self.ipfix.tee(self.output.on_records)  # type: ignore[method-assign]
        self.limiter = PpsLimiter(config.limits.max_pps)
        self.governor = CpuGovernor(config.limits.max_cpu_cores)
        self.breakers = HostBreakers(
            config.breakers, out.directory if out.directory.exists() else out.directory.parent
        )
        # A replayed capture is mapped into memory: its (shared, reclaimable) file pages are not the agent's.
        self.rss = RssWatch(config.limits.max_memory_mib)  # anonymous memory: see RssWatch
        self.sources = PacketSources(self)  #: the default source factory, and the interface watcher
        self._factory = source_factory or self.sources.open
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._user_capturing = True
        self._policy_pause: str | None = None
        self.controller: Any = None
        self._paused_by: list[str] = []
        self.control: Any = None
        self.control_socket: Any = None
        self.workers: list[CaptureWorker] = []
        self._errors: list[str] = []
        live = config.capture.mode != "replay"
        self.cgroup: Any = None
        for i in range(n_workers):
            cfg = self.meter_config.model_copy(update={"flow_id_base": (i + 1) << 48 | 1})
            self.workers.append(
                CaptureWorker(
                    name=str(i),
                    source_factory=lambda i=i: self._factory(i),
                    meter_config=cfg,
                    points=self.points,
                    on_records=self.output.on_records,
                    on_edges=self.output.on_edges,
                    limiter=self.limiter,
                    governor=self.governor,
                    bpf=config.capture.bpf if config.capture.mode != "interfaces" else None,
                    live_clock=live,
                    fragment_capacity=budget.fragment_capacity,
                    request_config=self.request_config,
                    on_requests=self.output.on_requests,
                )
            )
        if config.capture.mode == "mirror" and config.capture.mirror_dedup_ms > 0:
            from cloudtap.decode.dedup import Deduplicator

            for worker in self.workers:
                dedup = Deduplicator(window_ns=int(config.capture.mirror_dedup_ms * 1e6))
                worker.pipeline.packet_filter = dedup.mask
                worker.dedup = dedup  # type: ignore[attr-defined]
        for worker in self.workers:  # requests parsed from what the meter gets (after dedup), every row kept
            worker.pipeline.packet_filter = worker.request_tap(worker.pipeline.packet_filter)
            # frames cut to their policy's snap length; requests where asked
            if self.policy_filter is not None:
                worker.pipeline.filter = self.policy_filter
                worker.request_select = (
                    self.policy_filter.wants_requests if self.policy_filter.any_requests else None
                )
        from cloudtap.agent.packet_interfaces import point_namer
        from cloudtap.agent.packet_store import PacketStore

        replay_name = cap.replay_file.name if cap.mode == "replay" and cap.replay_file is not None else None
        self.packet_store = PacketStore(config.packets, point_namer(self.points, replay_name))
        for worker in self.workers:  # stores what the pipeline keeps (after dedup), with its decoded rows
            worker.pipeline.packet_filter = self.packet_store.tap(worker.pipeline.packet_filter)
        from cloudtap.broker.broker import Broker

        self.broker = Broker(config.broker, self.points)  # copies to tools (docs/broker.md); hot-applied
        for worker in self.workers:  # forwards what the pipeline keeps, after decode, in the worker's thread
            worker.pipeline.packet_filter = self.broker.tap(worker.pipeline.packet_filter)

    def _default_sink(self) -> RecordSink:
        return record_sink(self.config.output, self.agent_id, self.credentials)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Warm up kernels, start the watcher, the workers and the control endpoint (returns at once)."""
        warm_up()
        if self.request_config is not None:
            warm_up_requests()
            release_startup_pages()  # the parser's kernels mapped some of LLVM back in
        if self.config.limits.use_cgroup:
            from cloudtap.agent.cgroup import apply_cgroup

            self.cgroup = apply_cgroup(self.config.limits)
            log.info("cgroup: %s", self.cgroup.reason)
        cap = self.config.capture
        if cap.mode == "interfaces":
            self.sources.follow(self._stop, self._errors)
        for worker in self.workers:
            worker.start()
        from cloudtap.agent.control import open_endpoints

        ctl = self.config.control
        self.control, self.control_socket = open_endpoints(self, self.control_keys)
        for endpoint in (self.control, self.control_socket):
            if endpoint is not None:
                endpoint.start()
        if self.config.controller.url:
            from cloudtap.agent.controller_client import ControllerClient

            self.controller = ControllerClient(self)
            self.controller.start()
        if ctl.status_file is not None:
            ctl.status_file.write_text(self.control_url + "\n", encoding="utf-8")
        log.info("agent %s started: %s mode, control at %s", self.agent_id, cap.mode, self.control_url)

    @property
    def control_url(self) -> str:
        """The TCP control endpoint's URL, else the Unix socket's (``unix:/path``), else ``""``."""
        endpoint = self.control or self.control_socket
        return str(endpoint.url) if endpoint is not None else ""

    def run(self) -> None:
        """Start (if needed) and do housekeeping once a second until shut down."""
        if not self.workers or not self.workers[0]._thread.is_alive():
            self.start()
        replay_ended = False
        while not self._stop.wait(1.0 if not self._replay_done() or replay_ended else 0.0):
            self.housekeeping()
            if self._replay_done() and not replay_ended:
                if not self.config.capture.replay_stay:
                    break
                replay_ended = True
                self.output.flush()  # ship everything now; keep serving until told to stop
                sink_flush = getattr(self.sink, "flush", None)
                if callable(sink_flush):
                    sink_flush()
                log.info("agent %s: replay finished; staying up (capture.replay_stay)", self.agent_id)
        self._finish()

    def _ship_pending(self) -> int:
        stats = getattr(self.sink, "stats", None)
        return int(getattr(stats(), "pending_batches", 0)) if callable(stats) else 0

    def _replay_done(self) -> bool:
        return self.config.capture.mode == "replay" and all(w.finished.is_set() for w in self.workers)

    def shutdown(self, exit_code: int = 0, reason: str = "") -> None:
        """Ask :meth:`run` to stop (signal-safe); ``exit_code`` is what the process exits with (the highest asked)."""
        self.exit_code = max(self.exit_code, exit_code)
        if reason:
            log.warning("agent %s stopping (exit status %d): %s", self.agent_id, self.exit_code, reason)
        self._stop.set()

    def _finish(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        for worker in self.workers:
            worker.stop()
        self.sources.close()
        self.output.flush()
        self.sink.close()
        if self.ipfix is not None:
            self.ipfix.close()
        self.packet_store.close()
        self.broker.close()
        for endpoint in (self.control, self.control_socket):
            if endpoint is not None:
                endpoint.stop()

    # -- control --------------------------------------------------------------------------------------
    def set_capturing(self, on: bool) -> None:
        """User start/stop of capture (control endpoint, later the controller)."""
        self._user_capturing = on
        self._apply_capture_state()

    def set_policy_pause(self, reason: str | None) -> None:
        """Pause capture because the controller's policy selects nothing here (None: resume)."""
        self._policy_pause = reason
        self._apply_capture_state()

    def _apply_capture_state(self) -> None:
        on = self._user_capturing and not self._paused_by and self._policy_pause is None
        for worker in self.workers:
            worker.set_capturing(on)

    def housekeeping(self) -> None:
        """Breakers, memory, output rotation and edges; called once a second."""
        reasons = self.breakers.check()
        rss, over = self.rss.check()
        if over:
            reasons.append(
                f"memory: RSS {rss >> 20} MiB over the {self.config.limits.max_memory_mib} MiB grant"
            )
        if reasons != self._paused_by:
            if reasons:
                log.warning("capture paused: %s", "; ".join(reasons))
            elif self._paused_by:
                log.info("capture resumed: host healthy again")
            self._paused_by = reasons
            self._apply_capture_state()
        self.output.housekeeping()
        self.packet_store.housekeeping()

    # -- status ---------------------------------------------------------------------------------------
    def status(self) -> AgentStatus:
        """Everything in one snapshot."""
        stats = [w.source_stats() for w in self.workers]
        meters = [w.meter.stats for w in self.workers]
        per_if: dict[str, dict[str, Any]] = {}
        for s in stats:
            for name, counters in s.per_interface.items():
                slot = per_if.setdefault(name, {})
                for k, v in counters.items():
                    slot[k] = slot.get(k, 0) + v
        for point in self.points.all():
            slot = per_if.setdefault(point.interface, {})
            slot.update({"vm_domain": point.domain, "vm_mac": point.vm_mac})
        captured_bytes = sum(w.counters.wire_bytes for w in self.workers)
        record_bytes = self.output.bytes_out()
        sample = self.breakers.sample
        return AgentStatus(
            agent_id=self.agent_id,
            mode=self.config.capture.mode,
            capturing=any(w.capturing for w in self.workers),
            paused_by=list(self._paused_by)
            + ([] if self._user_capturing else ["stopped by user"])
            + ([self._policy_pause] if self._policy_pause else []),
            uptime_s=time.monotonic() - self._started,
            interfaces=per_if,
            captured_packets=sum(w.counters.packets for w in self.workers),
            captured_bytes=captured_bytes,
            kernel_drops=sum(s.kernel_drops for s in stats),
            filter_drops=sum(s.filter_drops for s in stats)
            + sum(w.pipeline.filtered_out for w in self.workers),
            duplicates=sum(s.duplicates for s in stats)
            + sum(w.pipeline.packets_filtered for w in self.workers),
            pps_limit_drops=sum(w.counters.pps_limit_drops for w in self.workers),
            meter_drops=sum(m.table_full_packets for m in meters),
            active_flows=sum(m.active_flows for m in meters),
            flow_table_capacity=sum(w.meter.config.max_flows for w in self.workers),
            records=sum(m.records for m in meters),
            record_bytes=record_bytes,
            wire_reduction=(captured_bytes / record_bytes) if record_bytes else 0.0,
            cpu_percent=self.governor.cpu_percent if hasattr(self.governor, "cpu_percent") else 0.0,
            rss_bytes=self.rss.check()[0],
            load1=float(getattr(sample, "load1", 0.0)) if sample is not None else os.getloadavg()[0],
            breaker_trips=sum(b.trips for b in getattr(self.breakers, "breakers", [])),
            errors=list(self._errors[-10:])
            + [w.counters.last_error for w in self.workers if w.counters.last_error],
            replay_done=self._replay_done(),
            ship_pending_batches=self._ship_pending(),
            ipfix=self.ipfix.counters() if self.ipfix is not None else {},
            broker=self.broker.status(),
            requests=request_status(self.workers, self.output),
        )

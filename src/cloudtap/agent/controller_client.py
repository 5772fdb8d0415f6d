"""ControllerClient: the agent's side of the controller (registration, heartbeat, config, commands).

Started by :class:`~cloudtap.agent.runner.Agent` when ``controller.url`` is set. Registration sends the
agent's current credential when it holds one (:mod:`cloudtap.agent.credentials`), else the bootstrap token
(``controller.token``); the answer's new credential and control key are kept at once. Every other call
sends the credential. Two daemon threads:

- ``controller-heartbeat``: registers (again after a 401 or 404), sends the status every ``heartbeat_s``; when
  the answer's ``config_version`` differs from the one in force it fetches ``GET /agents/{id}/config``,
  applies the hot keys at once, lists the restart-required ones in the next heartbeat, and caches the
  document on disk (``controller.cache_file``) so a restart without the server uses it.
- ``controller-commands``: long-polls ``GET /agents/{id}/commands?wait=25`` and runs each command
  (capture start/stop) the moment it arrives.

Losing the server changes nothing for capture: the agent keeps its config and its ServerSink spools.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from cloudtap import __version__
from cloudtap.agent.config import AgentConfig
from cloudtap.agent.config_apply import apply_hot, revert
from cloudtap.agent.config_overlay import changed_keys, effective_config
from cloudtap.agent.requests import heartbeat_fields
from cloudtap.agent.vm_report import VmReporter
from cloudtap.errors import CloudtapError, ConfigError

if TYPE_CHECKING:
    from cloudtap.agent.credentials import CredentialStore
    from cloudtap.agent.runner import Agent

log = logging.getLogger(__name__)

LONG_POLL_S = 25.0


def machine_id() -> str:
    """``/etc/machine-id`` (or D-Bus's), else a digest of the host name."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except OSError:
            continue
        if text:
            return text
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:32]


def local_address(url: str) -> str:
    """The local address this host uses to reach ``url`` (no packet is sent)."""
    host = urlparse(url).hostname or "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return ""


def advertised_control_url(agent: Any, controller_url: str) -> str:
    """The URL the server should use to reach ``agent``'s control endpoint (``""`` while it is not up).

    ``control.advertise_url`` when set; else the bound address and port, where a wildcard listen address
    (``0.0.0.0``, ``::``) becomes this host's address toward the controller.
    """
    configured = agent.config.control.advertise_url
    if configured:
        return str(configured).rstrip("/")
    httpd = getattr(getattr(agent, "control", None), "httpd", None)
    if httpd is None:
        return ""
    host, port = httpd.server_address[:2]
    if host in ("", "0.0.0.0", "::"):
        host = local_address(controller_url) or socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def document_config(base: AgentConfig, doc: dict[str, Any]) -> AgentConfig:
    """``base`` with a controller document (``overlay`` + compiled ``policy`` and ``broker``) laid over it."""
    overlay = dict(doc.get("overlay") or {})
    if doc.get("policy"):
        overlay["policy"] = doc["policy"]
    if doc.get("broker"):  # compiled distribution policies (sent only once some are defined)
        overlay["broker"] = doc["broker"]
    cfg = effective_config(base, overlay)
    pol = cfg.policy
    if pol.active and pol.snaplen and pol.snaplen != cfg.capture.snaplen:
        cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"snaplen": pol.snaplen})})
    if pol.active and any(f.requests for f in pol.filters) and not cfg.requests.enabled:
        # a policy asks for application requests: the parser is on (restart-required, like the snap length)
        cfg = cfg.model_copy(update={"requests": cfg.requests.model_copy(update={"enabled": True})})
    return cfg


def with_cached_config(config: AgentConfig) -> AgentConfig:
    """``config`` with the last controller document cached on disk laid over it (unchanged when none)."""
    path = config.controller.cache_file
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return config
    try:
        return document_config(config, doc)
    except ConfigError as exc:
        log.warning("controller: ignoring the cached config %s: %s", path, exc)
        return config


class ControllerClient:
    """Keeps one agent registered with the controller and applies what it sends."""

    def __init__(self, agent: Agent, transport: Any = None) -> None:
        import httpx

        self.agent = agent
        self.cfg = agent.config.controller
        if not self.cfg.url:
            raise ConfigError("controller.url is not set")
        self.base = getattr(agent, "base_config", agent.config)  #: before any controller document
        self.started = agent.config  #: what this process started with (restart-required keys stay so)
        self.url = self.cfg.url.rstrip("/") + "/api/v1"
        self.host_name = self.cfg.host_name or socket.gethostname()
        self.agent_id: str | None = None
        self.heartbeat_s = self.cfg.heartbeat_s
        self.applied_version = 0
        self.restart_required: list[str] = []
        self.config_error = ""
        self.last_error = ""
        self.control_url_error = ""  #: why the server refused the reported control URL
        self.connected = False
        self.commands_done = 0
        headers = {"User-Agent": f"cloudtap-agent/{__version__}"}
        self.bootstrap = self.cfg.token or agent.config.output.server_token  #: only ever sent to register
        store = getattr(agent, "credentials", None)
        if store is None:
            from cloudtap.agent.credentials import credential_store

            store = credential_store(agent.config)
        if store is None:
            raise ConfigError("controller.url is not set")
        self.credentials: CredentialStore = store
        self._hb = httpx.Client(timeout=httpx.Timeout(5.0), headers=headers, transport=transport)
        self._poll = httpx.Client(timeout=httpx.Timeout(5.0, read=LONG_POLL_S + 10), headers=headers, transport=transport)
        self._httpx = httpx
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._cached_doc = self._load_cache()
        self.vm_reporter = VmReporter(agent.config.capture.libvirt_dirs)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Apply the cached document (if any), then start the heartbeat and command threads."""
        if self._cached_doc is not None:
            self._apply_runtime(self._cached_doc)
            self.applied_version = int(self._cached_doc.get("version") or 0)
            if self.agent.config.policy.active:  # the runner merged the cache: push the policy into the parts
                apply_hot(self.agent, self.agent.config, ["policy.active", "policy.bpf", "policy.store_packets"])
        for name, target in (("controller-heartbeat", self._heartbeat_loop), ("controller-commands", self._command_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop both threads (the long-poll is abandoned, not waited for)."""
        self._stop.set()
        self._registered.set()
        for t in self._threads:
            t.join(0.5 if t.name == "controller-commands" else 2.0)
        self._hb.close()
        self._poll.close()

    # -- HTTP -----------------------------------------------------------------------------------------
    def _request(self, client: Any, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        """One request with ``token`` as the Bearer credential (default: the agent's own); returns the JSON answer.
        Raises _Refused (4xx) or _Unreachable."""
        token = token if token is not None or path.endswith("/register") else self.credentials.credential()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            resp = client.request(method, self.url + path, headers=headers, **kwargs)
        except self._httpx.HTTPError as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 500:
            raise _Unreachable(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise _Refused(resp.status_code, str(detail))
        return resp.json()

    def register(self) -> str:
        """Register and return the id the server assigned (raises _Refused / _Unreachable)."""
        mode = self.agent.config.capture.mode
        body = {"name": self.agent.agent_id, "hostname": self.host_name, "machine_id": machine_id(),
                "address": local_address(self.cfg.url or ""), "group": self.cfg.group, "version": __version__,
                "mode": mode, "heartbeat_s": self.cfg.heartbeat_s,
                "control_url": advertised_control_url(self.agent, self.cfg.url or "")}  # fmt: skip
        held = self.credentials.credential()
        try:
            answer = self._request(self._hb, "POST", "/agents/register", held or self.bootstrap, json=body)
        except _Refused as exc:
            if not held or exc.status not in (401, 403):
                raise
            log.info("controller: the server no longer takes this agent's credential (%s); using the bootstrap token",
                     exc)  # fmt: skip
            self.credentials.clear(held)
            answer = self._request(self._hb, "POST", "/agents/register", self.bootstrap, json=body)
        if not answer.get("credential") or not answer.get("control_key"):
            raise _Refused(502, "the controller issued no credential (a server older than this agent): upgrade it")
        self.credentials.save(answer)
        url_error = str(answer.get("control_url_error") or "")
        if url_error and url_error != self.control_url_error:
            log.warning("controller: the server refused this agent's control URL: %s", url_error)
        self.control_url_error = url_error
        self.agent_id = str(answer["agent_id"])
        self.heartbeat_s = float(answer.get("heartbeat_s") or self.cfg.heartbeat_s)
        self._registered.set()
        log.info("controller: registered as %s (group %s)", self.agent_id, answer.get("group"))
        return self.agent_id

    # -- heartbeat ------------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The heartbeat body from the agent's status."""
        s = self.agent.status()
        breakers = getattr(self.agent.breakers, "breakers", [])
        sink_stats = getattr(self.agent.sink, "stats", None)
        ship = sink_stats() if callable(sink_stats) else None
        governor = getattr(self.agent, "governor", None)
        points = getattr(self.agent, "points", None)
        ports = self.vm_reporter.ports(points) if points is not None else {}
        interfaces = [{"name": name, "mac": c.get("vm_mac"), "domain": c.get("vm_domain"),
                       "packets": int(c.get("packets", 0) or 0), "kernel_drops": int(c.get("kernel_drops", 0) or 0),
                       **ports.get(name, {})}
                      for name, c in s.interfaces.items()]  # fmt: skip
        return {
            "version": __version__, "mode": s.mode, "uptime_s": s.uptime_s, "capturing": s.capturing,
            "paused_by": s.paused_by, "breaker_trips": s.breaker_trips,
            "breaker_tripped": any(getattr(b, "tripped", False) for b in breakers),
            "cpu_percent": s.cpu_percent, "rss_bytes": s.rss_bytes, "load1": s.load1, "cores": os.cpu_count() or 0,
            "captured_packets": s.captured_packets, "captured_bytes": s.captured_bytes,
            "record_bytes": s.record_bytes, "records": s.records, "kernel_drops": s.kernel_drops,
            "meter_drops": s.meter_drops, "pps_limit_drops": s.pps_limit_drops, "interfaces": interfaces,
            "vms": self.vm_reporter.vms(points) if points is not None else [],
            "config_version": self.applied_version, "restart_required": self.restart_required,
            "config_error": self.config_error, "ship_pending_batches": getattr(ship, "pending_batches", 0),
            "ship_dead_letters": getattr(ship, "dead_letters", 0), "ship_retries": getattr(ship, "retries", 0),
            "ship_last_status": getattr(ship, "last_status", 0),
            "throttled_s": float(getattr(governor, "throttled_s", 0.0) or 0.0), "errors": s.errors[-5:],
            "control_url": advertised_control_url(self.agent, self.cfg.url or ""),
            **(self.agent.broker.heartbeat() if getattr(self.agent, "broker", None) is not None else {}),
            **heartbeat_fields(getattr(s, "requests", None) or {}),
        }  # fmt: skip

    def heartbeat_once(self) -> dict[str, Any]:
        """Register if needed, send one heartbeat, fetch and apply a new config version."""
        if self.agent_id is None or self.credentials.credential() is None:
            self.register()
        try:
            answer = self._request(self._hb, "POST", f"/agents/{self.agent_id}/heartbeat", json=self.report())
        except _Refused as exc:
            if exc.status in (401, 404):  # credential replaced or unknown, or the server forgot us: register again
                if exc.status == 401:
                    self.credentials.clear(self.credentials.credential())
                self.register()
                answer = self._request(self._hb, "POST", f"/agents/{self.agent_id}/heartbeat", json=self.report())
            else:
                raise
        self.heartbeat_s = float(answer.get("heartbeat_s") or self.heartbeat_s)
        url_error = str(answer.get("control_url_error") or "")
        if url_error and url_error != self.control_url_error:
            log.warning("controller: the server refused this agent's control URL: %s", url_error)
        self.control_url_error = url_error
        if int(answer["config_version"]) != self.applied_version:
            doc = self._request(self._hb, "GET", f"/agents/{self.agent_id}/config")
            self.apply(doc)
        return dict(answer)

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.heartbeat_once()
                if not self.connected:
                    log.info("controller: connected to %s", self.cfg.url)
                self.connected, self.last_error = True, ""
            except (_Refused, _Unreachable) as exc:
                if str(exc) != self.last_error:
                    log.warning("controller: %s", exc)
                self.connected, self.last_error = False, str(exc)
                if isinstance(exc, _Refused) and exc.status in (401, 403):
                    self.agent_id = None
            except Exception as exc:  # noqa: BLE001 - the agent must keep capturing whatever happens here
                log.exception("controller: heartbeat failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(max(0.0, self.heartbeat_s - (time.monotonic() - started)))

    # -- commands -------------------------------------------------------------------------------------
    def _command_loop(self) -> None:
        while not self._stop.is_set():
            if not self._registered.wait(0.5) or self.agent_id is None:
                continue
            try:
                answer = self._request(self._poll, "GET", f"/agents/{self.agent_id}/commands",
                                       params={"wait": LONG_POLL_S})  # fmt: skip
            except (_Refused, _Unreachable, RuntimeError):
                self._stop.wait(1.0)
                continue
            for cmd in answer.get("commands", []):
                ok, detail = self.run_command(str(cmd.get("action")))
                try:
                    self._request(self._poll, "POST", f"/agents/{self.agent_id}/commands/{cmd['id']}/result",
                                  json={"ok": ok, "detail": detail})  # fmt: skip
                except (_Refused, _Unreachable, RuntimeError):
                    pass

    def run_command(self, action: str) -> tuple[bool, str]:
        """Execute one command; returns (ok, detail)."""
        self.commands_done += 1
        if action in ("start", "stop"):
            self.agent.set_capturing(action == "start")
            log.info("controller: capture %s", action)
            return True, f"capture {action}ed" if action == "start" else "capture stopped"
        return False, f"unknown command {action!r}"

    # -- config ---------------------------------------------------------------------------------------
    def apply(self, doc: dict[str, Any]) -> list[str]:
        """Apply a config document: hot keys now, restart-required keys listed (and used after a restart).

        Returns:
            The keys applied live.
        """
        version = int(doc.get("version") or 0)
        try:
            applied = self._apply_runtime(doc)
        except (CloudtapError, ValueError) as exc:
            self.config_error = f"config version {version}: {exc}"
            log.error("controller: %s", self.config_error)
            self.applied_version = version  # do not fetch it again and again; the error is reported
            return []
        self.config_error = ""
        self.applied_version = version
        self._save_cache(doc)
        return applied

    def _apply_runtime(self, doc: dict[str, Any]) -> list[str]:
        with self._lock:
            agent = self.agent
            new = document_config(self.base, doc)
            self.restart_required = sorted(k for k, m in changed_keys(self.started, new).items() if m == "restart")
            running = revert(new, self.started, self.restart_required)
            hot = [k for k, m in changed_keys(agent.config, running).items() if m == "hot"]
            apply_hot(agent, running, hot)
            agent.config = running
            if self.restart_required:
                log.warning("controller: %s need a restart to take effect", ", ".join(self.restart_required))
            return hot

    def _load_cache(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.cfg.cache_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def _save_cache(self, doc: dict[str, Any]) -> None:
        path = self.cfg.cache_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("controller: cannot cache the config in %s: %s", path, exc)

    def status(self) -> dict[str, Any]:
        """The client's own state (for the agent's status endpoint and tests)."""
        return {"agent_id": self.agent_id, "connected": self.connected, "applied_version": self.applied_version,
                "restart_required": self.restart_required, "config_error": self.config_error,
                "last_error": self.last_error, "control_url_error": self.control_url_error}  # fmt: skip


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"controller refused (HTTP {status}): {detail}")
        self.status = status


class _Unreachable(Exception):
    pass

"""Controller: the facade the API routes use (registry, heartbeats, groups, policies, commands, fleet, diagnose)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudtap.agent.config_overlay import apply_mode, leaves
from cloudtap.inventory.model import Snapshot
from cloudtap.server.controller.auth import Refusal, check_token, registration_open
from cloudtap.server.controller.commands import command_queue
from cloudtap.server.controller.compiler import Compilation, compile_policies
from cloudtap.server.controller.control_url import ControlNetworks, UrlRefusals, check_control_url
from cloudtap.server.controller.db import dumps, open_controller_db
from cloudtap.server.controller.diagnose import diagnose_vm
from cloudtap.server.controller.diagnose_query import StoreLookup
from cloudtap.server.controller.distribution import Destination, Distribution, DistributionPolicy
from cloudtap.server.controller.distribution_compiler import (
    BrokerCompilation,
    broker_section,
    compile_distribution,
)
from cloudtap.server.controller.fleet import Fleet
from cloudtap.server.controller.groups import Groups
from cloudtap.server.controller.heartbeats import Heartbeats
from cloudtap.server.controller.identity import AgentIdentities, credential_agent
from cloudtap.server.controller.policy import Policies, Policy
from cloudtap.server.controller.registry import AgentRecord, Registry, agent_id_for
from cloudtap.server.controller.status import HeartbeatReport
from cloudtap.server.settings import ControllerSection

log = logging.getLogger(__name__)

Inventory = Callable[[], Snapshot]
#: id prefix of the pseudo-agent a user importing batches is authenticated as (``import:<user>``)
IMPORTER_PREFIX = "import:"


def _empty() -> Snapshot:
    return Snapshot(source="none", taken_at=0)


class Controller:
    """All controller state and behaviour; thread-safe; no HTTP here.

    Args:
        cfg: the ``controller`` settings.
        db_path: SQLite file of the controller state (unless ``cfg.database_url`` names a PostgreSQL).
        inventory: returns the inventory now (default: empty).
        store: the flow store (for "last records ingested"); optional.
        database: ClickHouse database of the flow tables.
    """

    def __init__(
        self,
        cfg: ControllerSection,
        db_path: str | Path,
        inventory: Inventory | None = None,
        store: Any = None,
        database: str = "cloudtap",
    ) -> None:
        self.cfg = cfg
        self.db = open_controller_db(cfg.database_url or db_path)
        self.inventory: Inventory = inventory or _empty
        self.store = store
        self.database = database
        self.registry = Registry(self.db)
        self.identities = AgentIdentities(self.db)
        self.control_networks = ControlNetworks(cfg.control_networks)
        self.url_refusals = UrlRefusals()
        #: ``POST /ingest`` also takes a user token of an importer: token -> user name (None: not a user token);
        #: raises Refusal. Set by the API (it knows the users); None: agents only.
        self.importer: Callable[[str | None], str | None] | None = None
        self.heartbeats = Heartbeats(self.db)
        self.groups = Groups(self.db)
        self.policies = Policies(self.db)
        self.distribution = Distribution(self.db)
        self.broker_compilation: BrokerCompilation | None = None
        self.commands = command_queue(self.db)
        self.fleet = Fleet(self.registry, self.heartbeats, cfg.stale_after, self.url_refusals)
        self.compilation: Compilation | None = None
        self._docs: dict[str, tuple[int, str, dict[str, Any]]] = {}
        self._sync_lock = threading.RLock()
        self._register_lock = threading.Lock()
        self._inventory_print = ""
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.db.subscribe("agents", self._load_docs)  # another server process compiled or registered
        self.db.subscribe("policies", lambda _: self._dirty.set())  # recompile here too (same documents)
        self.db.subscribe("groups", lambda _: self._dirty.set())
        self.db.subscribe("distribution", lambda _: self._dirty.set())
        self._load_docs()
        self.last_sync: dict[str, Any] = {}
        self.sync()

    def _load_docs(self, _detail: str = "") -> None:
        """Read the agents' config documents whose hash changed in the database."""
        with self._sync_lock:
            rows = self.db.rows("SELECT id, config_version, config_hash FROM agents")
            docs = {r["id"]: self._docs.get(r["id"]) for r in rows}
            stale = {r["id"] for r in rows
                     if (docs[r["id"]] or (None, None))[:2] != (r["config_version"], r["config_hash"])}  # fmt: skip
            sql = "SELECT id, config_version, config_hash, config_doc FROM agents"
            if len(stale) > 20:  # many (the start): one query
                texts = [r for r in self.db.rows(sql) if r["id"] in stale]
            else:
                texts = [r for agent_id in stale for r in self.db.rows(sql + " WHERE id = ?", (agent_id,))]
            for r in texts:
                docs[r["id"]] = (r["config_version"], r["config_hash"], json.loads(r["config_doc"]))
            self._docs = {k: v for k, v in docs.items() if v is not None}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (persistence, inventory watch, debounced recompiles)."""
        if registration_open(self.cfg):
            log.warning("controller: open registration (no controller.token or agent_tokens): any host that reaches "
                        "this server can register an agent; set a bootstrap token outside a lab")  # fmt: skip
        self._thread = threading.Thread(target=self._loop, name="controller", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread, persist, close the database."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()
        self.db.close()

    def flush(self) -> None:
        """Persist heartbeat times and latest reports."""
        self.registry.flush()
        self.heartbeats.flush()

    def _loop(self) -> None:
        last_flush = last_inv = time.monotonic()
        while not self._stop.wait(0.2):
            now = time.monotonic()
            try:
                if self._dirty.is_set():
                    self._dirty.clear()
                    self.sync()
                if now - last_inv >= self.cfg.sync_s:
                    last_inv = now
                    if self._fingerprint(self.inventory()) != self._inventory_print:
                        self.sync()
                if now - last_flush >= 2.0:
                    last_flush = now
                    self.flush()
            except Exception:  # noqa: BLE001 - the controller thread must survive; logged
                log.exception("controller: background work failed")

    # -- agents -------------------------------------------------------------------------------------
    def register(self, token: str | None, info: dict[str, Any], address: str = "") -> dict[str, Any]:
        """Register (or re-register) an agent and issue its credential and control key (rotated each time).

        ``token`` is the bootstrap token (``controller.token`` / ``agent_tokens``), or the agent's own current
        credential when it registers again. With no bootstrap token configured (open registration), an agent
        already holding a credential must present it: nobody else can take its id over.

        Raises:
            Refusal: 400/401/403/409 with the reason.
        """
        with self._register_lock:  # the API calls it from worker threads: one registration at a time
            return self._register(token, info, address)

    def _register(self, token: str | None, info: dict[str, Any], address: str) -> dict[str, Any]:
        name = str(info.get("name") or "")
        hostname = str(info.get("hostname") or "")
        machine = str(info.get("machine_id") or "")
        if not hostname or not machine:
            raise Refusal(400, "registration needs a host name and a machine id (/etc/machine-id)")
        agent_id = agent_id_for(hostname, machine)
        if not self.identities.holds(agent_id, token):
            if token and credential_agent(token) is not None:
                raise Refusal(403, f"this credential is not agent {agent_id!r}'s current one: register with the "
                                   "bootstrap token (controller.token)")  # fmt: skip
            check_token(self.cfg, (name or hostname, hostname), token)
            if registration_open(self.cfg) and self.identities.has_credential(agent_id):
                raise Refusal(403, f"agent {agent_id!r} ({hostname}) is registered and registration is open: register "
                                   "with its current credential, or delete the agent first (DELETE /api/v1/agents/"
                                   f"{agent_id})")  # fmt: skip
        taken = [a for a in self.registry.named(name or hostname) if a.id != agent_id]
        if taken:
            raise Refusal(409, f"agent name {name or hostname!r} belongs to agent {taken[0].id} on host "
                               f"{taken[0].hostname!r}: choose another agent_id, or delete that agent first")  # fmt: skip
        heartbeat_s = float(info.get("heartbeat_s") or self.cfg.heartbeat_s)
        rec = self.registry.register(
            name=name, hostname=hostname, machine_id=machine,
            address=str(info.get("address") or address), group=str(info.get("group") or "default"),
            version=str(info.get("version") or ""), mode=str(info.get("mode") or ""), heartbeat_s=heartbeat_s,
        )  # fmt: skip
        issued = self.identities.issue(rec.id)
        url_error = self._control_url(rec, str(info.get("control_url") or ""), address)
        self.groups.ensure(rec.group)
        self.sync({rec.id})
        rec = self.registry.get(rec.id)
        return {"agent_id": rec.id, "name": rec.name, "group": rec.group, "heartbeat_s": rec.heartbeat_s,
                "config_version": rec.config_version, "credential": issued.credential,
                "control_key": issued.control_key, "control_url": rec.control_url,
                "control_url_error": url_error}  # fmt: skip

    def authenticate_agent(self, token: str | None) -> AgentRecord:
        """The agent whose credential ``token`` is (or, for ``POST /ingest``, an importing user: see
        :attr:`importer`).

        Raises:
            Refusal: 401 when the credential is missing, unknown or replaced; 403 for a user token that may
                not import.
        """
        if self.importer is not None and (not token or credential_agent(token) is None):
            user = self.importer(token)
            if user is not None:
                return AgentRecord(id=f"{IMPORTER_PREFIX}{user}", name="", hostname="", machine_id="",
                                   extra={"importer": user})  # fmt: skip
        agent_id = self.identities.agent_of(token)
        try:
            return self.registry.get(agent_id)
        except Refusal:
            raise Refusal(401, f"agent {agent_id!r} is no longer registered: register again") from None

    def control_key(self, agent_id: str) -> str | None:
        """The key to send to ``agent_id``'s control endpoint (never log it)."""
        return self.identities.control_key(agent_id)

    def remove_agent(self, agent_id: str) -> None:
        """Forget an agent and its secrets (it must register again with the bootstrap token)."""
        self.registry.remove(agent_id)
        self.heartbeats.forget(agent_id)
        self.identities.forget(agent_id)
        self.url_refusals.forget(agent_id)

    def _control_url(self, rec: AgentRecord, url: str, peer: str) -> str:
        """Check and keep the control URL ``rec`` reported from ``peer``; returns why it was refused (or "")."""
        try:
            good = check_control_url(url, peer, self.control_networks)
        except ValueError as exc:
            self.url_refusals.refused(rec.id, str(exc))
            if rec.control_url:
                self.registry.update(rec.id, control_url="")
            log.warning("controller: agent %s (%s) reported a refused control URL: %s", rec.name, rec.id, exc)
            return str(exc)
        self.url_refusals.accepted(rec.id)
        if good != rec.control_url:
            self.registry.update(rec.id, control_url=good)
        return ""

    def heartbeat(self, rec: AgentRecord, report: HeartbeatReport, peer: str = "") -> dict[str, Any]:
        """Store a heartbeat from ``peer`` (its control URL checked: refused ones are kept empty); the answer
        carries the current config version and why the control URL was refused, if it was."""
        now = time.time()
        url_error = self._control_url(rec, report.control_url, peer)
        report = report.model_copy(update={"control_url": self.registry.get(rec.id).control_url})
        previous = self.heartbeats.record(rec.id, now, report)
        self.registry.seen(rec.id, now)
        if report.mode and report.mode != rec.mode:
            rec = self.registry.update(rec.id, mode=report.mode)
        macs = {(i.mac or "").lower() for i in report.interfaces}
        if previous is None or macs != {(i.mac or "").lower() for i in previous.report.interfaces}:
            self._dirty.set()  # the compiled interfaces depend on what the agent sees
        return {"config_version": self.registry.get(rec.id).config_version, "heartbeat_s": rec.heartbeat_s,
                "server_time": now, "control_url_error": url_error}  # fmt: skip

    def config_for(self, rec: AgentRecord) -> dict[str, Any]:
        """The agent's current config document and version."""
        version, _, doc = self._docs.get(rec.id) or (0, "", {"overlay": {}, "policy": {}})
        apply = {k: apply_mode(k) for k in leaves(doc.get("overlay", {}))}
        return {"version": version, "group": rec.group, **doc, "apply": apply}

    def set_group(self, agent_id: str, group: str) -> AgentRecord:
        """Move an agent to another group (its config follows at once)."""
        self.registry.get(agent_id)
        self.groups.ensure(group)
        self.registry.update(agent_id, group=group)
        self.sync()
        return self.registry.get(agent_id)

    def set_group_config(self, name: str, overlay: dict[str, Any], description: str | None = None) -> dict[str, Any]:
        """Replace a group's overlay (ConfigError when invalid); agents of the group get a new version."""
        group, modes = self.groups.set_overlay(name, overlay, description)
        self.sync()
        return {"group": group.name, "version": group.version, "overlay": group.overlay, "apply": modes}

    # -- policies -------------------------------------------------------------------------------------
    def put_policy(self, policy: Policy) -> dict[str, Any]:
        """Create or replace a policy and recompile."""
        self.policies.put(policy)
        return self.sync()

    def delete_policy(self, name: str) -> dict[str, Any]:
        """Delete a policy and recompile (Refusal 404 when unknown)."""
        if not self.policies.delete(name):
            raise Refusal(404, f"no policy called {name!r}")
        return self.sync()

    # -- distribution ---------------------------------------------------------------------------------
    def put_distribution(self, doc: Destination | DistributionPolicy) -> dict[str, Any]:
        """Create or replace a destination or a distribution policy and recompile (Refusal 422 when a policy
        names a destination that is not defined)."""
        if isinstance(doc, DistributionPolicy):
            missing = self.distribution.missing_destinations(doc)
            if missing:
                raise Refusal(422, f"no destination called {', '.join(map(repr, missing))}: add it first "
                                   "(cloudtap fleet destination add)")  # fmt: skip
        self.distribution.put(doc)
        return self.sync()

    def delete_distribution(self, kind: str, name: str) -> dict[str, Any]:
        """Delete a destination (Refusal 409 while a policy sends to it) or a distribution policy (``kind``:
        destination/policy) and recompile (Refusal 404 when unknown)."""
        users = self.distribution.users_of(name) if kind == "destination" else []
        if users:
            raise Refusal(409, f"destination {name!r} is used by distribution policies {', '.join(users)}: "
                               "remove it from them first")  # fmt: skip
        if not self.distribution.delete(kind, name):
            what = "destination" if kind == "destination" else "distribution policy"
            raise Refusal(404, f"no {what} called {name!r}")
        return self.sync()

    # -- compile ----------------------------------------------------------------------------------------
    @staticmethod
    def _fingerprint(snap: Snapshot) -> str:
        text = repr((snap.hosts, snap.vms, snap.interfaces, snap.projects, snap.subnets))
        return hashlib.sha256(text.encode()).hexdigest()

    def sync(self, only: set[str] | None = None) -> dict[str, Any]:
        """Recompile policies against the inventory now; bump the config version of every agent (of ``only``,
        when given) whose document (group overlay + compiled policy) changed. Returns a summary."""
        with self._sync_lock:
            started = time.perf_counter()
            snap = self.inventory()
            self._inventory_print = self._fingerprint(snap)
            agents = self.registry.all()
            comp = compile_policies(snap, self.policies.all(), agents, self.heartbeats.seen_macs())
            self.compilation = comp
            seen = self.heartbeats.seen_macs()
            broker = compile_distribution(snap, self.distribution.policies(), self.distribution.destinations(),
                                          agents, seen)  # fmt: skip
            self.broker_compilation = broker
            distributing = not self.distribution.is_empty()  # else the overlay's broker section stays as is
            changed: list[str] = []
            for agent in agents:
                if only is not None and agent.id not in only:
                    continue
                doc = {"overlay": self.groups.get(agent.group).overlay, "policy": comp.agents[agent.id].section()}
                if distributing:
                    doc["broker"] = broker_section(broker.agents[agent.id], doc["overlay"])
                text = dumps(doc)
                digest = hashlib.sha256(text.encode()).hexdigest()
                version, old_digest, _ = self._docs.get(agent.id, (0, "", {}))
                if digest == old_digest:
                    if agent.config_version != version:
                        self.registry.update(agent.id, config_version=version)
                    continue
                version = max(version, agent.config_version) + 1
                self._docs[agent.id] = (version, digest, doc)
                self.registry.update(agent.id, config_version=version, config_hash=digest, config_doc=text)
                changed.append(agent.name)
            self.last_sync = {"at": time.time(), "inventory_source": snap.source, "vms": len(snap.vms),
                              "hosts": len(snap.hosts), "policies": len(self.policies.all()), "agents": len(agents),
                              "changed": changed, "seconds": round(time.perf_counter() - started, 4)}  # fmt: skip
            return self.last_sync

    def compiled(self) -> dict[str, Any]:
        """Per agent: the compiled policy (with the VMs it covers)."""
        comp = self.compilation
        if comp is None:
            return {}
        out = {}
        for agent in self.registry.all():
            c = comp.agents.get(agent.id)
            if c is not None:
                out[agent.id] = {"name": agent.name, "host": agent.hostname, **c.section(), "vms": c.vms}
        return out

    # -- diagnose ---------------------------------------------------------------------------------------
    def diagnose_vm(self, name: str) -> dict[str, Any]:
        """Why is there no data for VM ``name``: the agent-side chain and the store's records (the API route
        adds the server-side links: refusals, backpressure, retention, tagging)."""
        lookup = StoreLookup(self.store, self.database) if self.store is not None else None
        return diagnose_vm(name, self.inventory(), self.fleet, self.compilation, lookup).as_dict()

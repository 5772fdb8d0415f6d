"""Fetch stored packets from several agents at once (httpx, asyncio), each answer spooled to a file.

A target the controller built carries its agent's control key, sent as ``Authorization: Bearer``; the
key never appears in an error, a log line or the file. Redirects are not followed (the key would go along).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from cloudtap.server.pcap.errors import PcapAgentError, PcapTooLarge
from cloudtap.server.pcap.targets import Target

#: Called as ``progress(bytes received so far, all agents)``.
FetchProgress = Callable[[int], None]


@dataclass
class Fetched:
    """One agent's answer on disk."""

    target: Target
    path: Path
    bytes: int
    agent_id: str
    blocks: str = ""


class _Budget:
    def __init__(self, limit: int, progress: FetchProgress | None) -> None:
        self.limit = limit
        self.used = 0
        self.progress = progress

    def take(self, n: int) -> bool:
        self.used += n
        if self.progress is not None:
            self.progress(self.used)
        return self.used <= self.limit


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:200]


async def _fetch_one(
    client: httpx.AsyncClient, target: Target, params: dict[str, str], budget: _Budget, spool: Path
) -> Fetched:
    url = target.url.rstrip("/") + "/packets"
    query = dict(params)
    if target.interfaces:
        query["interface"] = ",".join(target.interfaces)
    if target.bpf:
        query["filter"] = f"({query['filter']}) and ({target.bpf})" if query.get("filter") else target.bpf
    fd, name = tempfile.mkstemp(prefix="agent-", suffix=".pcapng", dir=spool)
    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            headers = {"Authorization": f"Bearer {target.key}"} if target.key else {}
            async with client.stream("GET", url, params=query, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    reason = _error_text(response)
                    if response.status_code == 413:
                        raise PcapTooLarge(f"agent {target.url}: {reason}", budget.limit)
                    raise PcapAgentError(f"agent {target.url}: HTTP {response.status_code}: {reason}")
                async for chunk in response.aiter_bytes(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
                    if not budget.take(len(chunk)):
                        raise PcapTooLarge(
                            f"the agents' packets exceed max_bytes={budget.limit} (more than {budget.used} bytes): "
                            "narrow the window or the filter",
                            budget.limit,
                        )
                agent_id = response.headers.get("x-cloudtap-agent", "")
                blocks = response.headers.get("x-cloudtap-blocks", "")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Fetched(target, path, size, agent_id or target.host or target.url, blocks)


async def fetch_all(
    targets: list[Target],
    from_ns: int,
    to_ns: int,
    bpf: str | None,
    max_bytes: int,
    spool: Path,
    timeout_s: float = 60.0,
    progress: FetchProgress | None = None,
) -> list[Fetched]:
    """Ask every target for its packets of ``[from_ns, to_ns)`` matching ``bpf``, concurrently.

    Raises:
        PcapTooLarge: an agent answered 413, or the answers together exceed ``max_bytes``.
        PcapAgentError: an agent failed or cannot be reached (every failure is listed).
    """
    spool.mkdir(parents=True, exist_ok=True)
    params = {"from": str(from_ns), "to": str(to_ns), "max_bytes": str(max_bytes)}
    if bpf:
        params["filter"] = bpf
    budget = _Budget(max_bytes, progress)
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        tasks = [asyncio.ensure_future(_fetch_one(client, t, params, budget, spool)) for t in targets]
        results = await asyncio.gather(*tasks, return_exceptions=True)
    done = [r for r in results if isinstance(r, Fetched)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for f in done:
            f.path.unlink(missing_ok=True)
        too_large = [e for e in errors if isinstance(e, PcapTooLarge)]
        if too_large:
            raise too_large[0]
        reasons = []
        for target, r in zip(targets, results, strict=True):
            if isinstance(r, PcapAgentError):
                reasons.append(str(r))
            elif isinstance(r, BaseException):
                reasons.append(f"agent {target.url}: {type(r).__name__}: {r}")
        raise PcapAgentError("; ".join(reasons))
    return done

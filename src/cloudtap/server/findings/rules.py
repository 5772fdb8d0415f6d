"""Isolation rules in cloud terms: "project A must not talk to project B", "subnet X to subnet Y".

A rule names two sides (a project by name or ``id:<n>``, or a CIDR) and whether it holds both ways.
Rules are versioned like policies: every save is a new row ``(name, version)`` in ``finding_rule``
(who, when); the newest version is in force, a delete is a tombstone version; history is kept.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloudtap.errors import CloudtapError
from cloudtap.server.findings.store import FindingStore, iso_s

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RuleError(CloudtapError):
    """A bad or unknown isolation rule (``field`` names the part)."""

    def __init__(self, message: str, field: str = "name") -> None:
        super().__init__(message)
        self.field = field


class Side(BaseModel):
    """One side of a rule: a project (name or ``id:<n>``) or a CIDR (exactly one)."""

    model_config = ConfigDict(extra="forbid")

    project: str | None = Field(default=None, description="project name or id:<n>")
    cidr: str | None = Field(default=None, description="subnet, e.g. 10.10.2.0/24")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        return None if v is None else str(ipaddress.ip_network(v, strict=False))

    @model_validator(mode="after")
    def _one(self) -> Side:
        if (self.project is None) == (self.cidr is None):
            raise ValueError("give exactly one of project or cidr")
        return self

    def describe(self) -> str:
        return f"project {self.project}" if self.project else f"subnet {self.cidr}"


class IsolationRule(BaseModel):
    """``a`` must not talk to ``b`` (and ``b`` not to ``a`` when ``both_ways``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = Field(default="", max_length=1000)
    a: Side
    b: Side
    both_ways: bool = True
    severity: Literal["info", "warning", "critical"] = "critical"
    version: int = Field(default=0, description="set by the store")
    updated_by: str = ""
    updated_at: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.fullmatch(v):
            raise ValueError(
                f"rule name {v!r}: 1-64 letters, digits, _ . - (starting with a letter or digit)"
            )
        return v

    def describe(self) -> str:
        arrow = "<->" if self.both_ways else "->"
        return f"{self.a.describe()} {arrow} {self.b.describe()} forbidden"


_BODY = {"description", "a", "b", "both_ways", "severity"}


class RuleStore:
    """Save, list, read, delete isolation rules (versioned) in the findings tables."""

    def __init__(self, findings: FindingStore) -> None:
        self.findings = findings

    def _rows(self, name: str | None = None) -> list[dict[str, Any]]:
        where = "WHERE name = {n:String}" if name else ""
        return self.findings.read(
            f"SELECT name, version, body, deleted, user, toUnixTimestamp64Milli(updated_at) AS at_ms "
            f"FROM {self.findings.t('finding_rule')} {where} ORDER BY name, version",
            {"n": name} if name else {},
        )

    @staticmethod
    def _rule(row: dict[str, Any]) -> IsolationRule:
        body = json.loads(row["body"])
        return IsolationRule(name=row["name"], version=row["version"], updated_by=row["user"],
                             updated_at=iso_s(row["at_ms"] / 1000), **body)  # fmt: skip

    def in_force(self) -> list[IsolationRule]:
        """Rules in force (newest version of each, deleted ones left out)."""
        newest: dict[str, dict[str, Any]] = {}
        for row in self._rows():
            newest[row["name"]] = row
        return [self._rule(r) for r in newest.values() if not r["deleted"]]

    def history(self, name: str) -> list[IsolationRule]:
        """Every version of ``name`` (deleted ones too), oldest first."""
        return [self._rule(r) for r in self._rows(name) if not r["deleted"]]

    def get(self, name: str) -> IsolationRule:
        """The rule in force called ``name``; RuleError when none."""
        for rule in self.in_force():
            if rule.name == name:
                return rule
        raise RuleError(f"no isolation rule {name!r}")

    def save(self, rule: IsolationRule, user: str) -> IsolationRule:
        """Store a new version of ``rule``."""
        rows = self._rows(rule.name)
        version = (rows[-1]["version"] if rows else 0) + 1
        now = time.time()
        body = rule.model_dump(include=_BODY)
        self.findings.insert_rows("finding_rule", [{"name": rule.name, "version": version, "body": json.dumps(body),
                                                    "deleted": 0, "user": user, "updated_at": round(now, 3)}])  # fmt: skip
        return rule.model_copy(update={"version": version, "updated_by": user, "updated_at": iso_s(now)})

    def delete(self, name: str, user: str) -> None:
        """Retire ``name`` (a tombstone version)."""
        rule = self.get(name)
        rows = self._rows(name)
        self.findings.insert_rows("finding_rule", [{"name": name, "version": rows[-1]["version"] + 1,
                                                    "body": json.dumps(rule.model_dump(include=_BODY)), "deleted": 1,
                                                    "user": user, "updated_at": round(time.time(), 3)}])  # fmt: skip

"""Scenario loading: built-ins, units, and clear ConfigErrors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtap.errors import ConfigError
from cloudtap.synth import builtin_scenario, load_scenario
from cloudtap.synth._units import parse_duration, parse_range
from cloudtap.synth.cloud import build_cloud
from cloudtap.synth.scenario import (
    BUILTIN_NAMES,
    BackupIncident,
    resolve_scenario,
    scenarios_dir,
    with_overrides,
)

MINIMAL = """
name: tiny
duration: 30s
cloud:
  hosts: 2
  projects:
    - name: p
      vms:
        - {role: web, count: 2}
        - {role: db, name: db-01}
services:
  - {name: sql, clients: p/web, servers: p/db, port: 5432, rate: 1}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_builtin_scenarios_match_their_yaml_files() -> None:
    for name in BUILTIN_NAMES:
        assert builtin_scenario(name) == load_scenario(scenarios_dir() / f"{name}.yaml")


def test_small_cloud_shape() -> None:
    scn = builtin_scenario("small-cloud")
    cloud = build_cloud(scn)
    assert len(cloud.project_names) == 3
    assert len(cloud.host_names) == 4
    assert cloud.n_vms == 30
    assert scn.duration == 3 * 3600
    assert scn.start.isoformat() == "2026-11-20T00:00:00+00:00"
    backups = [i for i in scn.incidents if isinstance(i, BackupIncident)]
    assert len(backups) == 1 and backups[0].every == 3600 and backups[0].at_minute == 0


def test_seed_case_has_150_vms_and_hourly_backup() -> None:
    scn = builtin_scenario("seed-case")
    assert build_cloud(scn).n_vms == 150
    assert any(isinstance(i, BackupIncident) and i.every == 3600 for i in scn.incidents)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3h", 10800), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("250ms", 0.25), (12, 12), ("1.5", 1.5)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["3 hours", "h", "", "-5", True, [1, 2]])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_parse_range() -> None:
    assert parse_range(5) == (5.0, 5.0)
    assert parse_range([1, 3]) == (1.0, 3.0)
    with pytest.raises(ValueError, match="low > high"):
        parse_range([3, 1])


def test_minimal_scenario_defaults(tmp_path: Path) -> None:
    scn = load_scenario(_write(tmp_path, MINIMAL))
    assert scn.duration == 30 and scn.encapsulation == "none" and scn.ts_precision == "ns"
    assert scn.start_ns == 1_795_132_800_000_000_000  # 2026-11-20T00:00:00Z


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("rate: 1}", "rate: -1}"), "services.0.rate"),
        (("port: 5432, ", ""), "needs a 'port'"),
        (("duration: 30s", "duration: 3 hours"), "cannot read duration '3 hours'"),
        (("hosts: 2", "hostz: 2"), "cloud.hostz: Extra inputs are not permitted"),
        (("servers: p/db", "servers: p/nosuch"), "'servers' selector 'p/nosuch' matches no VM"),
        (("{role: db, name: db-01}", "{role: db, name: web-01}"), "VM name 'web-01' is used twice"),
        (("{role: web, count: 2}", "{role: web, count: 2, host: hv-09}"), "unknown host 'hv-09'"),
        (("name: p\n", "name: p\n      subnet: 10.0.0.0/25\n"), "overlaps 10.0.0.0/24"),
        (("duration: 30s", "duration: 30s\nencapsulation: geneve"), "encapsulation: Input should be"),
    ],
)
def test_bad_scenarios_raise_config_error(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    old, new = edit
    assert old in MINIMAL
    path = _write(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_bad_incident_references(tmp_path: Path) -> None:
    text = MINIMAL + "incidents:\n  - {kind: backup, from_vm: db-01, to_vm: backup-09}\n"
    with pytest.raises(ConfigError, match=r"incidents.0 \(backup\): no VM named 'backup-09'"):
        load_scenario(_write(tmp_path, text))
    text = MINIMAL + "incidents:\n  - {kind: burst, service: nosuch}\n"
    with pytest.raises(ConfigError, match="unknown service 'nosuch'"):
        load_scenario(_write(tmp_path, text))
    text = MINIMAL + "incidents:\n  - {kind: meteor}\n"
    with pytest.raises(ConfigError, match="incidents.0"):
        load_scenario(_write(tmp_path, text))


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\ncloud: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_scenario(path)


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_scenario(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="cannot read scenario"):
        load_scenario(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not a built-in|nor a built-in"):
        resolve_scenario("no-such-scenario")
    with pytest.raises(ConfigError, match="unknown built-in scenario"):
        builtin_scenario("huge-cloud")


def test_overrides_are_validated() -> None:
    scn = with_overrides(builtin_scenario("small-cloud"), duration="10m", seed=7, encapsulation="vxlan")
    assert (scn.duration, scn.seed, scn.encapsulation) == (600, 7, "vxlan")
    with pytest.raises(ConfigError, match="encapsulation"):
        with_overrides(scn, encapsulation="mpls")

"""The agent's credential file: 0600, bound to its server and host, forgotten only when still current."""

from __future__ import annotations

import json
from pathlib import Path

from cloudtap.agent.credentials import CredentialStore

ANSWER = {"agent_id": "ag-1", "credential": "cta_ag-1_secret", "control_key": "key-1"}


def test_saved_0600_and_read_back_by_the_same_agent_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "credential.json"
    store = CredentialStore(path, "http://ctl:8470/", "hv-1", "m-1")
    assert store.credential() is None and store.control_key() is None
    store.save(ANSWER)
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["server"] == "http://ctl:8470"
    again = CredentialStore(path, "http://ctl:8470", "hv-1", "m-1")
    assert again.credential() == "cta_ag-1_secret" and again.control_key() == "key-1"
    assert CredentialStore(path, "http://other:8470", "hv-1", "m-1").credential() is None  # another server's
    assert CredentialStore(path, "http://ctl:8470", "hv-2", "m-1").credential() is None  # another host's
    path.chmod(0o644)
    CredentialStore(path, "http://ctl:8470", "hv-1", "m-1")
    assert path.stat().st_mode & 0o777 == 0o600  # tightened at load


def test_clear_forgets_only_the_credential_still_in_force(tmp_path: Path) -> None:
    path = tmp_path / "credential.json"
    store = CredentialStore(path, "http://ctl:8470", "hv-1", "m-1")
    store.save(ANSWER)
    store.save({**ANSWER, "credential": "cta_ag-1_newer", "control_key": "key-2"})
    store.clear("cta_ag-1_secret")  # a stale refusal of the previous one changes nothing
    assert store.credential() == "cta_ag-1_newer" and path.exists()
    store.clear("cta_ag-1_newer")
    assert store.credential() is None and not path.exists()


def test_an_unwritable_directory_keeps_the_credential_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = CredentialStore(blocker / "credential.json", "http://ctl:8470", "hv-1", "m-1")
    store.save(ANSWER)
    assert store.credential() == "cta_ag-1_secret"

"""Policies and group configs in a browser: everyone reads them; an operator's edit shows the diff (and what
it changes) before anything is written, and is applied only on Apply. The test's policy is disabled (it
changes no agent's capture on the shared server) and deleted at the end; the group config is not applied."""

from __future__ import annotations

import json
import secrets
import urllib.error
from typing import Any

import pytest
from console_pages import log_in

Console = Any  # tests/console/conftest.py's Console




def writes(page: Any) -> list[str]:
    """Every state-changing request the page sends (filled as it goes)."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.url.split('/api/v1', 1)[-1]}")
            if r.method in ("PUT", "DELETE") and "/api/v1/" in r.url else None)  # fmt: skip
    return sent


def removed_and_added(page: Any) -> tuple[list[str], list[str]]:
    diff = page.locator('[data-test="preview-panel"] [data-test="diff"]')
    return ([t[1:].strip() for t in diff.locator("span.del").all_inner_texts()],
            [t[1:].strip() for t in diff.locator("span.add").all_inner_texts()])  # fmt: skip


@pytest.fixture(autouse=True)
def older_server(console: Console, console_errors: list[str]) -> Any:
    """A dev server started before the preview routes existed answers them 404: the console then diffs by
    itself (and says so); that 404 is expected there."""
    yield
    paths = console.call("GET", "/openapi.json")["paths"]
    if "/api/v1/policies/{name}/preview" not in paths:
        console_errors[:] = [e for e in console_errors if "404 (Not Found)" not in e]


@pytest.fixture
def policy_name(console: Console) -> Any:
    name = f"console-test-{secrets.token_hex(3)}"
    yield name
    try:  # never leave the test's policy on the shared server
        console.call("DELETE", f"/api/v1/policies/{name}")
    except urllib.error.HTTPError:
        pass


def test_an_operator_reviews_the_diff_before_a_policy_is_applied(
    page: Any, console: Console, console_errors: list[str], shot: Any, policy_name: str
) -> None:
    log_in(page, console, *console.make_user("operator"), path="/policies")
    sent = writes(page)
    page.locator('[data-test="new-policy"]').click()
    page.locator('[data-test="policy-name"]').fill(policy_name)
    doc = {"priority": 900, "enabled": False, "select": {"vm": "console-test-*"}, "bpf": "tcp port 873",
           "action": {"capture": True, "snaplen": None, "store_packets": False}}  # fmt: skip
    page.locator('[data-test="policy-text"]').fill(json.dumps(doc, indent=2))
    page.locator('[data-test="preview"]').click()
    page.locator('[data-test="preview-panel"]').wait_for()
    removed, added = removed_and_added(page)
    assert not removed and f'"name": "{policy_name}",' in added and '"bpf": "tcp port 873",' in added
    assert not sent, "nothing is written before Apply"
    page.locator('[data-test="apply"]').click()
    page.locator('[data-test="policy-notice"]').wait_for()
    assert sent == [f"PUT /policies/{policy_name}"]
    assert any(p["name"] == policy_name for p in console.call("GET", "/api/v1/policies"))

    # edit: the diff names the changed lines only
    page.locator(f'tr[data-policy="{policy_name}"] [data-test="edit-policy"]').click()
    text = page.locator('[data-test="policy-text"]')
    text.fill(text.input_value().replace('"priority": 900', '"priority": 901'))
    page.locator('[data-test="preview"]').click()
    page.locator('[data-test="preview-panel"]').wait_for()
    assert removed_and_added(page) == (['"priority": 900,'], ['"priority": 901,'])
    shot(page, "policies")
    assert len(sent) == 1
    page.locator('[data-test="apply"]').click()
    page.locator('[data-test="policy-notice"]').wait_for()
    assert [p["priority"] for p in console.call("GET", "/api/v1/policies") if p["name"] == policy_name] == [901]

    # delete: a confirmation with what goes away
    page.locator(f'tr[data-policy="{policy_name}"] [data-test="edit-policy"]').click()
    page.locator('[data-test="delete-policy"]').click()
    dialog = page.locator('[data-test="confirm-dialog"]')
    dialog.locator('[data-test="diff"] span.del').first.wait_for()
    assert len(sent) == 2
    dialog.locator('[data-test="confirm-ok"]').click()
    page.locator('[data-test="policy-notice"]').get_by_text("deleted").wait_for()
    assert sent[-1] == f"DELETE /policies/{policy_name}"
    assert all(p["name"] != policy_name for p in console.call("GET", "/api/v1/policies"))


def test_a_group_config_edit_shows_the_diff_and_a_bad_document_in_words(
    admin_page: Any, console: Console, console_errors: list[str]
) -> None:
    page = admin_page
    group = console.call("GET", "/api/v1/groups")[0]
    sent = writes(page)
    page.goto(console.link("/policies", group=group["name"]))
    page.locator('[data-test="edit-group"]').click()
    editor = page.locator('[data-test="group-editor"]')
    editor.fill("{ not json")
    page.locator('[data-test="preview"]').click()
    assert "Not valid JSON" in page.locator('[data-test="editor-error"]').inner_text()
    overlay = {**group["overlay"], "limits": {**group["overlay"].get("limits", {}), "max_pps": 4321}}
    editor.fill(json.dumps(overlay))
    page.locator('[data-test="preview"]').click()
    page.locator('[data-test="preview-panel"]').wait_for()
    assert '"max_pps": 4321' in removed_and_added(page)[1]
    page.locator('[data-test="apply"]').wait_for()
    page.locator('[data-test="cancel-edit"]').click()  # not applied: the shared server keeps its config
    assert not sent
    assert console.call("GET", "/api/v1/groups")[0]["version"] == group["version"]


def test_a_viewer_reads_policies_but_has_no_edit_buttons(page: Any, console: Console, console_errors: list[str]) -> None:
    user, password = console.make_user("viewer")
    log_in(page, console, user, password, "/policies")
    page.locator('[data-test="compiled-panel"] tbody tr').first.wait_for()
    page.locator('[data-test="group-config"]').wait_for()
    buttons = '[data-test="new-policy"], [data-test="edit-policy"], [data-test="edit-group"], [data-test="delete-policy"]'
    assert page.locator(buttons).count() == 0
    token = console.token_for(user, password)
    for method, path, body in (("PUT", "/api/v1/policies/console-viewer", {"enabled": False}),
                               ("PUT", "/api/v1/groups/default/config", {"overlay": {}})):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            console.call(method, path, body, token=token)
        assert refused.value.code == 403

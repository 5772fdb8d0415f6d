"""State files hold secrets: created owner-only, and tightened when they exist with wider permissions."""

from __future__ import annotations

import stat
from pathlib import Path

from cloudtap.server.access.db import AccessDB
from cloudtap.server.controller.db import ControllerDB


def test_state_files_are_owner_only_even_when_they_existed_open(tmp_path: Path) -> None:
    for name, opener in (("access.sqlite", AccessDB), ("ctl.sqlite", ControllerDB)):
        fresh = tmp_path / "new" / name
        opener(fresh).close()
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
        loose = tmp_path / name
        loose.touch(mode=0o644)
        loose.chmod(0o644)
        opener(loose).close()
        assert stat.S_IMODE(loose.stat().st_mode) == 0o600, name

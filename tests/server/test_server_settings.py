"""Server settings refuse what would silently do nothing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloudtap.server.settings import ServerSettings


def test_the_removed_shared_agent_token_is_refused_with_where_it_went() -> None:
    assert ServerSettings.model_validate({"api": {"agent_token": None}}).api.agent_token is None
    with pytest.raises(ValidationError, match="controller.token"):
        ServerSettings.model_validate({"api": {"agent_token": "s3cret"}})

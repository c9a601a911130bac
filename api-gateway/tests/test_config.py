"""Gateway settings come from their own variables, never from generic ones a platform sets."""

from __future__ import annotations

import pytest

from api_gateway.config import GatewaySettings


def test_port_and_host_ignore_the_generic_variables_honcho_and_shells_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "5300")
    monkeypatch.setenv("HOST", "build-box.example")
    monkeypatch.delenv("GATEWAY_PORT", raising=False)
    monkeypatch.delenv("GATEWAY_HOST", raising=False)
    settings = GatewaySettings()
    assert settings.port == 8080
    assert settings.host == "0.0.0.0"
    monkeypatch.setenv("GATEWAY_PORT", "9090")
    assert GatewaySettings().port == 9090

"""``price-platform rollout``: canary share, shadow alias and the gate from the command line, on a real registry."""

from __future__ import annotations

import pytest

from price_platform import cli
from price_platform.rollout.traffic import current
from price_platform.settings import Settings, get_settings
from price_platform_tests.rollout_support import database, fitted, rollout  # noqa: F401 (fixtures)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, mlflow_server: str, database, rollout, settings: Settings):
    name, _, _ = rollout
    monkeypatch.setenv("PRICE_PLATFORM_MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("PRICE_PLATFORM_MODEL_NAME", name)
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_URL", database.server_url.render_as_string(hide_password=False))
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_NAME", database.database_name)
    monkeypatch.setenv("PRICE_PLATFORM_HOME", str(settings.home))
    get_settings.cache_clear()
    yield rollout
    get_settings.cache_clear()


def test_canary_shadow_and_gate_from_the_command_line(environment, mlflow_server, capsys) -> None:
    name, champion, challenger = environment
    assert cli.main(["rollout", "canary", "--share", "0.1"]) == 0
    assert cli.main(["rollout", "shadow", challenger]) == 0
    state = current(mlflow_server, name)
    assert (state.canary_share, state.shadow) == (0.1, challenger)
    assert "canary share 0.1" in capsys.readouterr().out
    assert cli.main(["rollout", "gate"]) == 0
    assert f"version {challenger} vs {champion}: waiting" in capsys.readouterr().out


def test_a_bad_share_is_refused_with_its_message(environment, mlflow_server, capsys) -> None:
    name, _, _ = environment
    assert cli.main(["rollout", "canary", "--share", "2"]) == 1
    assert "canary share must be a number from 0 to 1, got 2.0" in capsys.readouterr().err
    assert current(mlflow_server, name).canary_share == 0.0

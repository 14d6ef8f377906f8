"""Settings: environment variables in, a clear error naming the variable out."""

from __future__ import annotations

from pathlib import Path

import pytest

from promo_bridge.settings import AuthMode, SettingsError, load_settings


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text("program_id: 1\npromotions: {}\nrules: []\n")
    return path


@pytest.fixture
def base_env(monkeypatch: pytest.MonkeyPatch, rules: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("PROMO_BRIDGE_RULES_FILE", str(rules))
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_TILL_CODE", "store.server")
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD", "server123")
    return monkeypatch


def test_reads_prefixed_variables(base_env: pytest.MonkeyPatch) -> None:
    """PROMO_BRIDGE_* variables set the fields, lists come comma-separated."""
    base_env.setenv("PROMO_BRIDGE_INPUT_TOPICS", "a, b,c")
    base_env.setenv("PROMO_BRIDGE_BATCH_WINDOW_MS", "250")
    settings = load_settings()
    assert settings.input_topics == ["a", "b", "c"]
    assert settings.batch_window_ms == 250
    assert settings.capillary_auth is AuthMode.BASIC


def test_bad_number_names_the_variable(base_env: pytest.MonkeyPatch) -> None:
    """A value that does not parse fails start-up naming the variable."""
    base_env.setenv("PROMO_BRIDGE_BATCH_WINDOW_MS", "soon")
    with pytest.raises(SettingsError, match="PROMO_BRIDGE_BATCH_WINDOW_MS"):
        load_settings()


def test_missing_rules_file_names_the_variable(base_env: pytest.MonkeyPatch) -> None:
    """A rules path that does not exist is refused at start-up."""
    base_env.setenv("PROMO_BRIDGE_RULES_FILE", "/nonexistent/rules.yaml")
    with pytest.raises(SettingsError, match="PROMO_BRIDGE_RULES_FILE"):
        load_settings()


def test_oauth_requires_key_and_secret(base_env: pytest.MonkeyPatch) -> None:
    """OAuth without its key and secret names both variables."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_AUTH", "oauth")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "PROMO_BRIDGE_CAPILLARY_OAUTH_KEY" in str(info.value)
    assert "PROMO_BRIDGE_CAPILLARY_OAUTH_SECRET" in str(info.value)


def test_error_never_shows_the_secret(base_env: pytest.MonkeyPatch) -> None:
    """A settings error does not echo the values it was given."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD", "hunter2-secret")
    base_env.setenv("PROMO_BRIDGE_MAX_PENDING_COMMANDS", "-5")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)
    assert "PROMO_BRIDGE_MAX_PENDING_COMMANDS" in str(info.value)


def test_resume_mark_defaults_to_half(base_env: pytest.MonkeyPatch) -> None:
    """Without an explicit low-water mark, partitions resume at half the pause mark."""
    base_env.setenv("PROMO_BRIDGE_MAX_PENDING_COMMANDS", "1000")
    assert load_settings().resume_below == 500


def test_resume_mark_must_be_below_pause_mark(base_env: pytest.MonkeyPatch) -> None:
    """A low-water mark at or above the high-water mark is refused."""
    base_env.setenv("PROMO_BRIDGE_MAX_PENDING_COMMANDS", "100")
    base_env.setenv("PROMO_BRIDGE_RESUME_PENDING_COMMANDS", "100")
    with pytest.raises(SettingsError, match="PROMO_BRIDGE_RESUME_PENDING_COMMANDS"):
        load_settings()

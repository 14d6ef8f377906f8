"""Security settings: secrets from files (PROMO_BRIDGE_<NAME>_FILE), https-only Capillary."""

from __future__ import annotations

from pathlib import Path

import pytest

from promo_bridge.settings import SettingsError, load_settings, unknown_variables

SECRET = "file-borne-s3cret"


@pytest.fixture
def base_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n")
    monkeypatch.setenv("PROMO_BRIDGE_RULES_FILE", str(rules))
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_TILL_CODE", "store.server")
    # The default base URL is the local simulator's, plain HTTP.
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_ALLOW_HTTP", "true")
    return monkeypatch


def _secret_file(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "secret"
    path.write_text(content)
    return path


@pytest.mark.parametrize(
    "name", ["CAPILLARY_PASSWORD", "CAPILLARY_OAUTH_SECRET", "KAFKA_SASL_PASSWORD"]
)
def test_secret_is_read_from_the_file_its_file_variable_names(
    base_env: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    """PROMO_BRIDGE_<NAME>_FILE sets the secret to the file's content, final newline dropped."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD", "server123")
    base_env.delenv(f"PROMO_BRIDGE_{name}", raising=False)
    base_env.setenv(f"PROMO_BRIDGE_{name}_FILE", str(_secret_file(tmp_path, SECRET + "\n")))
    value = getattr(load_settings(), name.lower())
    assert value.get_secret_value() == SECRET
    assert SECRET not in repr(load_settings())


def test_both_variable_and_file_are_refused_naming_both(
    base_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Setting a secret and its _FILE twin is refused, naming both and showing neither value."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD", "server123")
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD_FILE", str(_secret_file(tmp_path, SECRET)))
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "PROMO_BRIDGE_CAPILLARY_PASSWORD_FILE" in message
    assert SECRET not in message
    assert "server123" not in message


def test_unreadable_secret_file_names_the_variable(
    base_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A _FILE naming a missing file fails start-up naming the variable and the OS's reason."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="PROMO_BRIDGE_CAPILLARY_PASSWORD_FILE: cannot read"):
        load_settings()


def test_empty_secret_file_is_refused(base_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A secret file holding only a newline is refused rather than sent as an empty password."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD_FILE", str(_secret_file(tmp_path, "\n")))
    with pytest.raises(SettingsError, match=r"PROMO_BRIDGE_CAPILLARY_PASSWORD_FILE: .* empty"):
        load_settings()


def test_file_variables_are_known_settings() -> None:
    """The unknown-variable check accepts the _FILE variables and still flags a typo of one."""
    environ = {
        "PROMO_BRIDGE_CAPILLARY_PASSWORD_FILE": "/run/secrets/password",
        "PROMO_BRIDGE_KAFKA_SASL_PASSWORD_FILE": "/run/secrets/sasl",
        "PROMO_BRIDGE_CAPILLARY_OAUTH_SECRET_FILE": "/run/secrets/oauth",
    }
    assert unknown_variables(environ) == []
    assert unknown_variables({"PROMO_BRIDGE_CAPILLARY_PASSWORD_FIEL": "x"}) != []


def test_http_base_url_is_refused_without_the_development_setting(
    base_env: pytest.MonkeyPatch,
) -> None:
    """An http:// Capillary URL fails start-up naming BASE_URL and ALLOW_HTTP, not the URL."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD", "server123")
    base_env.delenv("PROMO_BRIDGE_CAPILLARY_ALLOW_HTTP")
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_BASE_URL", "http://api.internal.example:8090")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "PROMO_BRIDGE_CAPILLARY_BASE_URL: must be https://" in message
    assert "PROMO_BRIDGE_CAPILLARY_ALLOW_HTTP" in message
    assert "api.internal.example" not in message


def test_https_base_url_needs_no_development_setting(base_env: pytest.MonkeyPatch) -> None:
    """An https:// Capillary URL is accepted with ALLOW_HTTP left at its default (false)."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD", "server123")
    base_env.delenv("PROMO_BRIDGE_CAPILLARY_ALLOW_HTTP")
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_BASE_URL", "https://eu.api.capillarytech.com")
    settings = load_settings()
    assert settings.capillary_allow_http is False
    assert settings.capillary_base_url == "https://eu.api.capillarytech.com"

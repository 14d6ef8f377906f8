"""Unknown PROMO_BRIDGE_* variables are refused, and the start-up banner hides every secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
from cli_support import run

from harness import service_settings, write_rules
from promo_bridge.runtime import build_service
from promo_bridge.runtime_banner import effective_config, safe_url
from promo_bridge.settings import ENV_PREFIX, Settings, unknown_variables

SASL_SECRET = "sasl-secret-91c2"
API_SECRET = "api-secret-5d7e"


def _settings(tmp_path: Path) -> Settings:
    return service_settings(
        bootstrap="127.0.0.1:9092",
        api_url="https://eu.api.example.com:8443/base",
        rules_file=write_rules(tmp_path),
        unique="guard",
        topics=["orders"],
        capillary_password=API_SECRET,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password=SASL_SECRET,
    )


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles() -> None:
    """A near miss names the real variable; a name like none of them gets no suggestion."""
    problems = unknown_variables(
        {
            f"{ENV_PREFIX}KAFKA_BOOTSTRAP": "x",
            f"{ENV_PREFIX}CAPILLARY_PASWORD": "x",
            f"{ENV_PREFIX}ZZZ": "x",
        }
    )
    hint = "unknown setting (did you mean {}?)"
    assert problems == [
        f"{ENV_PREFIX}CAPILLARY_PASWORD: " + hint.format(f"{ENV_PREFIX}CAPILLARY_PASSWORD"),
        f"{ENV_PREFIX}KAFKA_BOOTSTRAP: " + hint.format(f"{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS"),
        f"{ENV_PREFIX}ZZZ: unknown setting",
    ]


def test_known_names_in_any_case_the_test_suites_own_and_other_variables_pass() -> None:
    """Settings match case-insensitively; PROMO_BRIDGE_TEST_* and foreign names are not ours."""
    environ = {
        f"{ENV_PREFIX}GROUP_ID": "g",
        "promo_bridge_input_topics": "a",
        f"{ENV_PREFIX}TEST_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == []


def test_run_refuses_an_unknown_variable_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` stops before connecting: exit 2 and one stderr line with the did-you-mean."""
    monkeypatch.setenv(f"{ENV_PREFIX}GROUPID", "mine")

    assert run("run") == 2

    err = capsys.readouterr().err
    assert err == (
        f"promo-bridge: invalid settings: {ENV_PREFIX}GROUPID: unknown setting"
        f" (did you mean {ENV_PREFIX}GROUP_ID?)\n"
    )


def test_the_effective_configuration_hides_secrets_and_shows_the_api(tmp_path: Path) -> None:
    """Every setting is listed; SecretStr values are redacted; the base URL is shown."""
    shown = effective_config(_settings(tmp_path))

    assert set(shown) == set(Settings.model_fields)
    assert shown["capillary_password"] == "***"
    assert shown["kafka_sasl_password"] == "***"
    assert shown["capillary_base_url"] == "https://eu.api.example.com:8443/base"
    assert shown["kafka_security_protocol"] == "SASL_PLAINTEXT"
    text = json.dumps(shown)
    assert SASL_SECRET not in text
    assert API_SECRET not in text


def test_a_url_keeps_only_scheme_host_port_and_path() -> None:
    """User information, query and fragment are dropped from a URL that is shown."""
    assert safe_url("https://u:pw@api.example.com:8443/v2?k=secret#f") == (
        "https://api.example.com:8443/v2"
    )


def test_building_the_service_logs_one_service_config_line(tmp_path: Path) -> None:
    """build_service logs `service_config` once, with the API and without any secret."""
    with structlog.testing.capture_logs() as logs:
        build_service(_settings(tmp_path))

    [banner] = [entry for entry in logs if entry["event"] == "service_config"]
    assert banner["capillary_base_url"] == "https://eu.api.example.com:8443/base"
    assert banner["group_id"] == "pb-guard"
    assert SASL_SECRET not in repr(banner)
    assert API_SECRET not in repr(banner)

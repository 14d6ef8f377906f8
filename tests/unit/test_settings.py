"""Settings: environment variables in, a clear error naming the variable out."""

from __future__ import annotations

from pathlib import Path

import pytest

from promo_bridge import cli
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
    # The default base URL is the local simulator's, plain HTTP.
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_ALLOW_HTTP", "true")
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


def _refused(variable: str) -> str:
    """The SettingsError message of the current environment, checked to name `variable`."""
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert variable in message
    return message


SECRET = "s3cret-pw"

# Values that would otherwise fail only once the service connects, as (variable, value).
REFUSED = [
    pytest.param("CAPILLARY_BASE_URL", f"https://user:{SECRET}@eu.api.example", id="url-userinfo"),
    pytest.param("CAPILLARY_BASE_URL", f"https://:{SECRET}@eu.api.example/v2", id="url-password"),
    pytest.param("CAPILLARY_BASE_URL", "eu.api.capillarytech.com", id="url-no-scheme"),
    pytest.param("CAPILLARY_BASE_URL", "ftp://eu.api.capillarytech.com", id="url-ftp"),
    pytest.param("CAPILLARY_BASE_URL", "https://", id="url-no-host"),
    pytest.param("CAPILLARY_BASE_URL", "http:///v2", id="url-path-only"),
    pytest.param("CAPILLARY_BASE_URL", "https://eu.api.example:http", id="url-bad-port"),
    pytest.param("CAPILLARY_BASE_URL", "https://eu.api.example:0", id="url-port-0"),
    pytest.param("CAPILLARY_BASE_URL", " https://eu.api.example", id="url-space"),
    pytest.param("CAPILLARY_BASE_URL", "https://eu.api.example?org=1", id="url-query"),
    pytest.param("CAPILLARY_BASE_URL", "https://eu.api.example/v2#x", id="url-fragment"),
    pytest.param("KAFKA_BOOTSTRAP_SERVERS", "PLAINTEXT://broker:9092", id="kafka-scheme"),
    pytest.param("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9092,,broker-2:9092", id="kafka-empty"),
    pytest.param("KAFKA_BOOTSTRAP_SERVERS", "broker:kafka", id="kafka-bad-port"),
    pytest.param("KAFKA_BOOTSTRAP_SERVERS", "broker:70000", id="kafka-port-range"),
    pytest.param("KAFKA_BOOTSTRAP_SERVERS", "[::1:9092", id="kafka-bracket"),
    pytest.param("KAFKA_BOOTSTRAP_SERVERS", f"user:{SECRET}@broker:9092", id="kafka-userinfo"),
    pytest.param("KAFKA_BOOTSTRAP_SERVERS", "", id="kafka-blank"),
    pytest.param("KAFKA_SSL_CAFILE", "/nonexistent/ca.pem", id="ssl-cafile"),
    pytest.param("KAFKA_SSL_CERTFILE", "/nonexistent/client.pem", id="ssl-certfile"),
    pytest.param("CAPILLARY_UNENROLL_PATH_PREFIX", "v3.1", id="prefix-relative"),
    pytest.param("CAPILLARY_UNENROLL_PATH_PREFIX", "/v3.1?org=1", id="prefix-query"),
    pytest.param("CAPILLARY_UNENROLL_PATH_PREFIX", "https://eu.api.example/v3.1", id="prefix-url"),
    pytest.param("INPUT_TOPICS", "orders,commerce events", id="topic-space"),
    pytest.param("OUTCOMES_TOPIC", "promo/outcomes", id="topic-slash"),
    pytest.param("DLQ_TOPIC", "..", id="topic-dots"),
    pytest.param("DLQ_TOPIC", "x" * 250, id="topic-long"),
    pytest.param("GROUP_ID", "", id="group-empty"),
]

# Forms the clients accept, kept as given.
ACCEPTED = [
    ("CAPILLARY_BASE_URL", "http://127.0.0.1:8090"),
    ("CAPILLARY_BASE_URL", "https://eu.api.capillarytech.com/"),
    ("CAPILLARY_BASE_URL", "https://[::1]:8443/prefix"),
    (
        "KAFKA_BOOTSTRAP_SERVERS",
        "kafka-0.kafka:9092, broker,10.0.0.7:9093,[::1]:9094,[fe80::1],::1",
    ),
    ("CAPILLARY_UNENROLL_PATH_PREFIX", ""),
    ("CAPILLARY_UNENROLL_PATH_PREFIX", "/api/v3.1/"),
    ("DLQ_TOPIC", "promo-bridge.dlq_v2"),
]


@pytest.mark.parametrize(("variable", "value"), REFUSED)
def test_value_that_would_fail_later_fails_start_up(
    base_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A value the service could not connect with is refused at start-up, naming the variable."""
    base_env.setenv(f"PROMO_BRIDGE_{variable}", value)
    assert SECRET not in _refused(f"PROMO_BRIDGE_{variable}")


@pytest.mark.parametrize(("variable", "value"), ACCEPTED)
def test_forms_the_clients_read_are_accepted(
    base_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Every form of URL, broker list, prefix and topic that the clients accept is kept as given."""
    base_env.setenv(f"PROMO_BRIDGE_{variable}", value)
    assert getattr(load_settings(), variable.lower()) == value


def test_base_url_with_credentials_says_where_they_go(base_env: pytest.MonkeyPatch) -> None:
    """A base URL with user:password is refused pointing at the credential variables."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_BASE_URL", f"https://user:{SECRET}@eu.api.example")
    message = _refused("PROMO_BRIDGE_CAPILLARY_BASE_URL")
    assert "must not carry a user or password" in message
    assert "PROMO_BRIDGE_CAPILLARY_TILL_CODE" in message


def test_ssl_key_needs_a_certificate(base_env: pytest.MonkeyPatch, rules: Path) -> None:
    """A client key without its certificate is refused: aiokafka would ignore the key."""
    base_env.setenv("PROMO_BRIDGE_KAFKA_SSL_KEYFILE", str(rules))
    assert "PROMO_BRIDGE_KAFKA_SSL_CERTFILE" in _refused("PROMO_BRIDGE_KAFKA_SSL_KEYFILE")


def test_every_problem_on_one_line(base_env: pytest.MonkeyPatch) -> None:
    """Several bad values make one line that names each variable."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_BASE_URL", "ftp://host")
    base_env.setenv("PROMO_BRIDGE_BATCH_WINDOW_MS", "soon")
    message = _refused("PROMO_BRIDGE_CAPILLARY_BASE_URL")
    assert "PROMO_BRIDGE_BATCH_WINDOW_MS" in message
    assert message.startswith("invalid settings: ")
    assert "\n" not in message


def test_run_refuses_bad_settings_with_one_line(
    base_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`promo-bridge run` with a bad base URL exits 2 with one stderr line and no traceback."""
    base_env.setenv("PROMO_BRIDGE_CAPILLARY_BASE_URL", f"https://user:{SECRET}@eu.api.example")
    assert cli.main(["run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("promo-bridge: invalid settings: PROMO_BRIDGE_CAPILLARY_BASE_URL: ")
    assert SECRET not in captured.err
    assert "Traceback" not in captured.err


def test_fetch_limits_default_to_bounded_sizes(base_env: pytest.MonkeyPatch) -> None:
    """Without settings a fetch brings at most 16 MiB, 1 MiB of it per partition."""
    settings = load_settings()
    assert settings.kafka_fetch_max_bytes == 16 * 1024 * 1024
    assert settings.kafka_max_partition_fetch_bytes == 1024 * 1024


def test_fetches_wait_briefly_for_fuller_answers_by_default(base_env: pytest.MonkeyPatch) -> None:
    """Without settings the broker answers a fetch at 256 KiB or after 50 ms."""
    settings = load_settings()
    assert (settings.kafka_fetch_min_bytes, settings.kafka_fetch_max_wait_ms) == (256 * 1024, 50)


_BAD_FETCH_LIMITS = ("0", "512", "1MB", "-1", str(2**31))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        *(("KAFKA_FETCH_MAX_BYTES", value) for value in _BAD_FETCH_LIMITS),
        *(("KAFKA_MAX_PARTITION_FETCH_BYTES", value) for value in _BAD_FETCH_LIMITS),
        ("KAFKA_FETCH_MIN_BYTES", "0"),
        ("KAFKA_FETCH_MIN_BYTES", "1MB"),
        ("KAFKA_FETCH_MIN_BYTES", str(2**31)),
        ("KAFKA_FETCH_MAX_WAIT_MS", "-1"),
        ("KAFKA_FETCH_MAX_WAIT_MS", "10001"),
    ],
)
def test_bad_fetch_setting_names_the_variable(
    base_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Fetch limits below 1 KiB, a minimum below 1 byte, sizes past int32, waits past 10 s fail."""
    base_env.setenv(f"PROMO_BRIDGE_{variable}", value)
    _refused(f"PROMO_BRIDGE_{variable}")


@pytest.mark.parametrize(
    "variable", ["KAFKA_MAX_PARTITION_FETCH_BYTES", "KAFKA_FETCH_MIN_BYTES"], ids=str.lower
)
def test_fetch_size_must_fit_in_the_fetch_limit(
    base_env: pytest.MonkeyPatch, variable: str
) -> None:
    """A per-partition limit or fetch minimum above the per-fetch limit names both variables."""
    base_env.setenv("PROMO_BRIDGE_KAFKA_FETCH_MAX_BYTES", "1048576")
    base_env.setenv(f"PROMO_BRIDGE_{variable}", "2097152")
    message = _refused(f"PROMO_BRIDGE_{variable}")
    assert "PROMO_BRIDGE_KAFKA_FETCH_MAX_BYTES" in message

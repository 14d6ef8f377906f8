"""Capillary over verified TLS: the simulator served with a test CA's certificate (issue 15)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from harness import service_settings, write_rules
from promo_bridge.bootstrap import capillary_tls_problem, configure
from promo_bridge.capillary import ApiUnavailable, CapillaryClient, ClientConfig, OAuthAuth
from promo_bridge.simulator import Credentials, Simulator, serve
from promo_bridge.simulator._server import ServerTls

pytestmark = pytest.mark.integration

DEV = Credentials()


@dataclass(frozen=True)
class TlsApi:
    base_url: str
    ca_file: Path


@pytest.fixture
async def tls_api(tmp_path: Path) -> AsyncIterator[TlsApi]:
    """The simulator over HTTPS with a certificate for 127.0.0.1 from a fresh test CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, ca_file = tmp_path / "api.pem", tmp_path / "api-key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(ca_file))
    async with serve(Simulator(), tls=ServerTls(certfile, keyfile)) as server:
        assert server.base_url.startswith("https://")
        yield TlsApi(server.base_url, ca_file)


def _client_config(api: TlsApi, ca_file: Path | None) -> ClientConfig:
    return ClientConfig(
        base_url=api.base_url,
        auth=OAuthAuth(key=DEV.oauth_key, secret=SecretStr(DEV.oauth_secret)),
        ca_file=ca_file,
        max_attempts=1,
    )


async def test_client_authenticates_over_tls_trusting_the_test_ca(tls_api: TlsApi) -> None:
    """With CAPILLARY_CA_FILE the client verifies the simulator's certificate and gets a token."""
    async with CapillaryClient(_client_config(tls_api, tls_api.ca_file)) as client:
        await client.authenticate()


async def test_client_refuses_the_certificate_without_the_ca(tls_api: TlsApi) -> None:
    """Without the test CA verification fails: the client gets no answer from the API."""
    async with CapillaryClient(_client_config(tls_api, None)) as client:
        with pytest.raises(ApiUnavailable):
            await client.authenticate()


async def test_startup_check_names_the_ca_setting_when_the_certificate_is_untrusted(
    tls_api: TlsApi, tmp_path: Path
) -> None:
    """The start-up check's line names CAPILLARY_CA_FILE, and passes once it is set."""
    common = {
        "bootstrap": "127.0.0.1:9092",
        "api_url": tls_api.base_url,
        "rules_file": write_rules(tmp_path),
        "unique": "tls",
        "topics": ["events-tls"],
    }
    line = await capillary_tls_problem(service_settings(**common))
    assert line is not None
    assert "PROMO_BRIDGE_CAPILLARY_CA_FILE" in line
    assert "not trusted" in line
    assert "\n" not in line
    trusted = service_settings(**common, capillary_ca_file=tls_api.ca_file)
    assert await capillary_tls_problem(trusted) is None
    assert configure(trusted).client.ca_file == tls_api.ca_file

"""`promo-bridge check` against the real broker and the simulator: one line per finding."""

from __future__ import annotations

from typing import Any

import pytest

from cli_process import run_cli, use_environment
from harness import Rig
from kafka_tools import create_topics
from promo_bridge._cli_check_probes import check
from promo_bridge.settings import ENV_PREFIX
from promo_bridge.simulator import Simulator
from runtime_support import wait_until

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "not-the-password-7f3a"


async def lines(**kwargs: Any) -> list[str]:
    """The rendered findings of an in-process check."""
    findings = await check(timeout_s=10, **kwargs)
    return [finding.render() for finding in findings.items]


async def test_a_good_setup_passes_with_exit_0_and_creates_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Good settings, topics and credentials: only ok lines, exit 0, no state topic created."""
    settings = await rig.prepare(Simulator(), partitions=2)
    use_environment(monkeypatch, settings)

    code, out = await run_cli("check")
    found = await lines()

    assert code == 0, out
    assert out.splitlines() == found
    assert all(line.startswith("ok: ") for line in found), found
    assert any(line.startswith("ok: capillary:") for line in found)
    assert any(f"state pb-{rig.unique}.state does not exist yet" in line for line in found)
    # check mode created nothing: the state topic is still missing on a second look.
    again = await lines()
    assert any("does not exist yet" in line for line in again)


async def test_a_wrong_password_fails_naming_the_variable_without_the_secret(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """401 from Capillary: an error line naming PROMO_BRIDGE_CAPILLARY_PASSWORD, exit 1."""
    settings = await rig.prepare(Simulator(), partitions=1)
    use_environment(monkeypatch, settings, **{f"{ENV_PREFIX}CAPILLARY_PASSWORD": WRONG_PASSWORD})

    code, out = await run_cli("check")

    assert code == 1, out
    [refused] = [line for line in out.splitlines() if line.startswith("error: ")]
    assert refused.startswith("error: capillary:")
    assert "HTTP 401" in refused
    assert f"{ENV_PREFIX}CAPILLARY_PASSWORD" in refused
    assert WRONG_PASSWORD not in out
    assert "server123" not in out


async def test_a_missing_outcomes_topic_fails_naming_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outcomes topic that does not exist: an error line naming it, and the check fails."""
    settings = await rig.prepare(Simulator(), partitions=2)
    missing = f"no-outcomes-{rig.unique}"
    use_environment(monkeypatch, settings, **{f"{ENV_PREFIX}OUTCOMES_TOPIC": missing})

    found = await lines()

    errors = [line for line in found if line.startswith("error: ")]
    expected = (
        f"error: topics: outcomes topic {missing} does not exist: create it with at least 2"
        " partitions (as many as the widest input topic)"
    )
    assert errors == [expected]


async def test_outcomes_narrower_than_the_input_fail(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outcomes with fewer partitions than the input: an error line saying how many it needs."""
    settings = await rig.prepare(Simulator(), partitions=3)
    narrow = f"narrow-outcomes-{rig.unique}"
    await create_topics(rig.bootstrap, {narrow: 1})
    use_environment(monkeypatch, settings, **{f"{ENV_PREFIX}OUTCOMES_TOPIC": narrow})
    found: list[str] = []

    async def narrow_topic_listed() -> bool:
        # A topic just created may take a moment to appear in the broker's metadata.
        found[:] = await lines()
        return not any("does not exist" in line and narrow in line for line in found)

    await wait_until(narrow_topic_listed, timeout_s=10, what=f"{narrow} listed")

    [error] = [line for line in found if line.startswith("error: ")]
    assert error.startswith(f"error: topics: outcomes topic {narrow} has 1 partitions")
    assert "at least 3 partitions" in error


async def test_a_misspelt_variable_fails_with_did_you_mean(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROMO_BRIDGE_KAFKA_BOOTSTRAP (a typo) is an error suggesting the real name; exit 1."""
    settings = await rig.prepare(Simulator(), partitions=1)
    use_environment(monkeypatch, settings, **{f"{ENV_PREFIX}KAFKA_BOOTSTRAP": rig.bootstrap})

    code, out = await run_cli("check")

    assert code == 1, out
    assert out.splitlines()[0] == (
        f"error: settings: {ENV_PREFIX}KAFKA_BOOTSTRAP: unknown setting"
        f" (did you mean {ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS?)"
    )

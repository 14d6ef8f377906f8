"""The `promo-bridge` parser: one command per module, and the service loaded only by `run`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version

import pytest
from cli_support import RULES

from promo_bridge.cli import build_parser


def test_every_command_is_registered() -> None:
    """The top-level parser offers every command, the service first and the simulator last."""
    [commands] = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    assert list(commands.choices) == [
        "run",
        "check",
        "rules",
        "replay",
        "topics",
        "produce",
        "tail",
        "dlq",
        "simulate-api",
    ]


def test_rules_check_loads_no_kafka() -> None:
    """`rules check` runs without importing aiokafka: the service's modules load only for `run`."""
    script = (
        "import sys\n"
        "from promo_bridge.cli import main\n"
        f"code = main(['rules', 'check', {str(RULES)!r}])\n"
        "print(code, 'aiokafka' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines()[-1] == "0 False"


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    """`promo-bridge --version` prints the installed version and exits 0, needing no command."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"promo-bridge {version('promo-bridge')}\n"

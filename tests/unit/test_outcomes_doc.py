"""docs/outcomes.md tells users what every status, class and Capillary code means: no drift."""

from __future__ import annotations

from pathlib import Path

from promo_bridge.capillary import ERROR_CODES
from promo_bridge.domain.outcomes import ErrorClass, OutcomeStatus

DOC = (Path(__file__).resolve().parents[2] / "docs" / "outcomes.md").read_text()


def test_every_status_and_error_class_is_explained() -> None:
    """Each OutcomeStatus and ErrorClass value has a row of its own."""
    for value in [*OutcomeStatus, *ErrorClass]:
        assert f"| `{value.value}` |" in DOC, value


def test_the_code_table_equals_the_client_table() -> None:
    """The Capillary codes table lists exactly ERROR_CODES, with each code's class."""
    section = DOC.split("## Capillary codes", 1)[1]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    documented = {
        int(cells[0]): cells[1].strip().strip("`") for cells in rows if cells[0].strip().isdigit()
    }
    assert documented == {code: spec.error_class.value for code, spec in ERROR_CODES.items()}

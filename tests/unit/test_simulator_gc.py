"""The simulator keeps the garbage collector's full collections off its growing state."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from promo_bridge.simulator._cli import GC_THRESHOLDS, keep_collector_off_the_state


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """The test process's collector settings as they were, afterwards."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_full_collections_rare() -> None:
    """What exists at start is frozen; young collections as usual, full ones ~never."""
    keep_collector_off_the_state()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == GC_THRESHOLDS
    young, middle, full = GC_THRESHOLDS
    assert (young, middle) == (700, 10)
    assert full >= 1_000_000

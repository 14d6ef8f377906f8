"""RecentMap: a bounded memory that forgets its oldest key first."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promo_bridge.domain._recent import RecentMap


def test_the_oldest_key_is_forgotten_first() -> None:
    """Past the capacity, the key added longest ago goes, and only it."""
    recent: RecentMap[str, int] = RecentMap(2)
    for index, key in enumerate("abc"):
        recent.set(key, index)
    assert "a" not in recent
    assert (recent.get("b"), recent.get("c"), len(recent)) == (1, 2, 2)


def test_setting_a_held_key_changes_its_value_not_its_age() -> None:
    """A key set again keeps its place in line, as an OrderedDict's does."""
    recent: RecentMap[str, int] = RecentMap(2)
    recent.set("a", 1)
    recent.set("b", 2)
    recent.set("a", 3)
    recent.set("c", 4)
    assert "a" not in recent
    assert (recent.get("b"), recent.get("c")) == (2, 4)


def test_capacity_zero_remembers_nothing_and_negative_is_refused() -> None:
    """A memory of 0 keys holds none; a negative capacity is an error."""
    recent: RecentMap[str, None] = RecentMap(0)
    recent.set("a", None)
    assert "a" not in recent
    assert len(recent) == 0
    with pytest.raises(ValueError, match="capacity"):
        RecentMap(-1)


@given(
    capacity=st.integers(0, 5),
    ops=st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 9)), max_size=60),
)
def test_it_holds_what_a_bounded_ordered_dict_holds(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    """Any sequence of sets leaves the keys and values an OrderedDict trimmed at the front does."""
    recent: RecentMap[str, int] = RecentMap(capacity)
    model: OrderedDict[str, int] = OrderedDict()
    for key, number in ops:
        recent.set(key, number)
        if capacity:
            model[key] = number
            if len(model) > capacity:
                model.popitem(last=False)
    assert len(recent) == len(model)
    for key in "abcdefgh":
        assert (key in recent, recent.get(key)) == (key in model, model.get(key))

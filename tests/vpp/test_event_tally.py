"""EventTally: events per device on the park's local day, checked against a plain recount."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp.event_tally import EventTally

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai: an hour before local midnight
DEVICES = [f"d{i}" for i in range(5)]


def test_counts_each_event_once_per_device_and_excludes_the_asking_instruction() -> None:
    tally = EventTally(ZONE)
    tally.note(["d0", "d1"], T0, "i1")
    tally.note(["d0"], T0 + timedelta(minutes=5), "i1")  # joined again: the same event
    tally.note(["d0"], T0 + timedelta(minutes=10), "i2")
    now = T0 + timedelta(minutes=20)
    assert tally.counts(now) == {"d0": 2, "d1": 1}
    assert tally.counts_array(["d1", "d0", "d9"], now).tolist() == [1.0, 2.0, 0.0]
    assert tally.counts_array(["d1", "d0", "d9"], now, excluding="i1").tolist() == [0.0, 1.0, 0.0]


def test_local_midnight_starts_a_new_day_and_earlier_notes_are_ignored() -> None:
    tally = EventTally(ZONE)
    tally.note(["d0"], T0, "i1")
    after_midnight = T0 + timedelta(hours=1, minutes=1)  # 00:01 local, the next day
    assert tally.counts(after_midnight) == {}
    assert tally.counts_array(["d0"], after_midnight).tolist() == [0.0]
    tally.note(["d1"], after_midnight, "i2")
    tally.note(["d0"], T0, "i3")  # a late note for yesterday changes nothing today
    assert tally.counts(after_midnight) == {"d1": 1}


notes = st.lists(
    st.tuples(st.lists(st.sampled_from(DEVICES), max_size=4), st.integers(0, 36 * 60), st.sampled_from(["i1", "i2", "i3", "s1"])),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(notes=notes, excluding=st.sampled_from(["i1", "i2", "x"]))
def test_matches_a_recount_of_todays_distinct_events(notes: list[tuple[list[str], int, str]], excluding: str) -> None:
    """Noted in time order, the tally equals counting distinct (device, event) pairs of the latest day."""
    tally = EventTally(ZONE)
    seen: set[tuple[str, object, str]] = set()
    for devices, minute, event in sorted(notes, key=lambda n: n[1]):
        at = T0 + timedelta(minutes=minute)
        tally.note(devices, at, event)
        seen.update((d, at.astimezone(ZONE).date(), event) for d in devices)
    now = T0 + timedelta(minutes=max((m for _, m, _ in notes), default=0))
    today = now.astimezone(ZONE).date()
    expected = {d: sum(1 for dd, day, _ in seen if dd == d and day == today) for d in DEVICES}
    expected_excluding = {d: sum(1 for dd, day, e in seen if dd == d and day == today and e != excluding) for d in DEVICES}
    assert tally.counts(now) == {d: n for d, n in expected.items() if n}
    assert np.array_equal(tally.counts_array(DEVICES, now, excluding=excluding), [expected_excluding[d] for d in DEVICES])

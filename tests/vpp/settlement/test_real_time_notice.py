"""Day-ahead or real-time is decided by the notice an instruction came with, not by its channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.vpp.settlement.conftest import MONTH, local
from vpp.model import DispatchInstruction, DispatchState, DispatchStatus
from vpp.settlement import config_from_dict
from vpp.settlement.events import dr_events, is_real_time, notice_s
from vpp.settlement.meters import net_load_kw

START = datetime(2026, 7, 14, 6, 0, tzinfo=UTC)  # 14:00 local
HOUR = 3600.0


def _pair(source: str, notice: timedelta | None) -> tuple[DispatchInstruction, DispatchState]:
    instruction = DispatchInstruction(
        id=f"i-{source}-{notice}".replace(" ", "").replace(":", "-").replace(",", ""),
        kind="delta", start=START, end=START + timedelta(hours=1), delta_kw=100.0, source=source,
    )
    state = DispatchState(
        instruction_id=instruction.id, status=DispatchStatus.COMPLETED, updated_at=instruction.end,
        received_at=None if notice is None else START - notice,
    )
    return instruction, state


@pytest.mark.parametrize(
    ("source", "notice", "real_time"),
    [
        ("rest", timedelta(hours=20), False),  # invited the day before
        ("rest", timedelta(minutes=5), True),  # short notice over REST is still real-time
        ("iec104", timedelta(days=2), False),  # the channel alone does not make it real-time
        ("rest", timedelta(hours=12), False),  # exactly the threshold: day-ahead
        ("rest", timedelta(hours=12) - timedelta(seconds=1), True),  # one second short of it: real-time
        ("rest", timedelta(minutes=-3), True),  # received after its start (late AGC relay)
        ("iec104", None, True),  # receipt time unknown: falls back to the channel
        ("rest", None, False),
    ],
)
def test_notice_below_the_day_ahead_minimum_makes_a_real_time_event(source, notice, real_time):
    instruction, state = _pair(source, notice)
    assert is_real_time(instruction, state, 12 * HOUR, frozenset({"iec104"})) is real_time
    expected = "p-rt" if real_time else "p"
    (event,) = dr_events([(instruction, state)], "Asia/Shanghai", "p", "p-rt", frozenset({"iec104"}), 12 * HOUR)
    assert event.event.programme == expected
    assert event.notice_s == (None if notice is None else notice.total_seconds())


def test_notice_is_start_minus_received_and_the_threshold_comes_from_the_programme():
    instruction, state = _pair("rest", timedelta(hours=3))
    assert notice_s(instruction, state) == 3 * HOUR
    config = config_from_dict({"programme": {"day_ahead_min_notice_h": 2.0}})
    assert config.day_ahead_min_notice_s == 2 * HOUR
    assert not is_real_time(instruction, state, config.day_ahead_min_notice_s, config.real_time_sources)
    assert is_real_time(instruction, state, 4 * HOUR, config.real_time_sources)  # 3 h of notice < a 4 h minimum
    assert config.digest != config_from_dict({}).digest


async def test_the_short_notice_event_of_the_month_uses_the_load_just_before_control(settlement, settled_store):
    result = await settlement.run(MONTH)
    events = {e["event_id"]: e for e in result.settlement.park["events"]}
    assert events["rt-0728"]["programme"] == "park-dr-real-time" and events["rt-0728"]["notice_min"] == 5.0
    assert events["dr-0714"]["programme"] == "park-dr" and events["dr-0714"]["notice_min"] == 20 * 60.0
    # Jiangsu real-time baseline: the load of the quarter hour before control starts, held over the 45-min window.
    (meter,) = [m for m in await settled_store.list_meters("e03") if m.purpose == "grid"]
    before = local(28, 9, 45)
    readings = await settled_store.meter_readings(meter.id, before - timedelta(hours=1), before + timedelta(hours=1))
    quarter_kw = net_load_kw(readings, before, 1, settlement.config.max_reading_gap_s)[0]
    row = next(r for r in result.settlement.enterprises["e03"]["rows"] if r["event_id"] == "rt-0728")
    assert not np.isnan(quarter_kw)
    assert row["baseline_kwh"] == pytest.approx(quarter_kw * 0.75, abs=2e-3)

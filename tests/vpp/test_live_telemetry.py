"""LiveTelemetry: columns kept up to date batch by batch equal columns gathered afresh from the latest samples."""

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp.live_telemetry import LiveTelemetry, TelemetryColumns
from vpp.model import TelemetrySample

T0 = datetime(2026, 7, 1, tzinfo=UTC)
FLEET = ("a", "b", "c", "d")
OTHER_FLEET = ("d", "b", "e")

samples = st.builds(
    lambda device, second, p_kw, soc, online: TelemetrySample(
        device_id=device, ts=T0 + timedelta(seconds=second), p_kw=p_kw, p_min_kw=min(p_kw, 0.0), p_max_kw=max(p_kw, 0.0),
        soc_kwh=soc, online=online,
    ),
    st.sampled_from(["a", "b", "c", "d", "e", "x"]),
    st.integers(0, 20),
    st.floats(-100, 100),
    st.one_of(st.none(), st.floats(0, 50)),
    st.booleans(),
)


def _assert_same(kept: TelemetryColumns, fresh: TelemetryColumns) -> None:
    for name in ("p_kw", "p_min_kw", "p_max_kw", "soc_kwh", "online", "ts_s"):
        assert np.array_equal(getattr(kept, name), getattr(fresh, name), equal_nan=name != "online"), name
    assert kept.last_seen == fresh.last_seen


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(samples, max_size=8), max_size=6), switch_at=st.integers(0, 6))
def test_columns_kept_batch_by_batch_equal_columns_gathered_afresh(batches: list[list[TelemetrySample]], switch_at: int) -> None:
    live = LiveTelemetry({"a": TelemetrySample(device_id="a", ts=T0, p_kw=1.0, p_min_kw=0.0, p_max_kw=2.0)})
    fleet = FLEET
    live.columns(fleet)
    for k, batch in enumerate(batches):
        if k == switch_at:
            fleet = OTHER_FLEET  # the fleet changed: columns gathered for the new order, then kept
        live.update(batch)
        _assert_same(live.columns(fleet), TelemetryColumns.gather(fleet, live.latest))


def test_an_older_sample_does_not_replace_a_newer_one() -> None:
    new = TelemetrySample(device_id="a", ts=T0 + timedelta(seconds=5), p_kw=3.0, p_min_kw=0.0, p_max_kw=5.0)
    old = new.model_copy(update={"ts": T0, "p_kw": 9.0})
    live = LiveTelemetry()
    columns = live.columns(FLEET)
    assert live.update([new, old]) == 1
    assert live.latest["a"] is new
    assert columns.p_kw[0] == 3.0 and columns.last_seen[0] == new.ts
    assert columns.last_seen[1:] == [None, None, None] and not columns.online[1:].any()

"""Dispatch: pure computation of set-points (numpy in, numpy out; no I/O, no asyncio).

* ``allocate`` / ``allocate_from_baseline``: real-time allocation of a plant
  target across devices, exact (merit order, price threshold for the QP);
* ``allocate_with_groups``: the same under feeder / transformer caps (fast
  path when no cap binds, HiGHS from sparse arrays when one does);
* ``setpoint_bounds``: per-device bounds from ramp, SoC, availability;
* ``dispatch.schedule``: the 96-interval horizon schedule on HiGHS (imported
  on its own so the real-time path does not load the solver);
* ``dispatch.envelope``, ``dispatch.forecast``: the plant envelope and the
  PV and load forecasts feeding it;
* ``dispatch.reference``: HiGHS models of the allocation, for tests and benchmarks.
"""

from dispatch.allocate import Allocation, allocate, allocate_from_baseline
from dispatch.bounds import setpoint_bounds
from dispatch.network import GroupAllocation, allocate_from_baseline_with_groups, allocate_with_groups

__all__ = [
    "Allocation",
    "GroupAllocation",
    "allocate",
    "allocate_from_baseline",
    "allocate_from_baseline_with_groups",
    "allocate_with_groups",
    "setpoint_bounds",
]

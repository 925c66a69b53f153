"""dispatch package."""

from dispatch.allocate import Allocation, allocate, allocate_from_baseline
from dispatch.bounds import setpoint_bounds

__all__ = ["Allocation", "allocate", "allocate_from_baseline", "setpoint_bounds"]

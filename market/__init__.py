"""Market side: delivery performance now; tariffs, baselines, settlement and bids grow here.

Pure computation over numpy arrays: no I/O, no asyncio.
"""

from market.performance import enterprise_delivered_kwh, response_ratio

__all__ = ["enterprise_delivered_kwh", "response_ratio"]

"""Device and grid protocol adapters. Only this package opens connections to devices."""

from adapters.base import Adapter, AdapterError

__all__ = ["Adapter", "AdapterError"]

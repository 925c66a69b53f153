"""Prometheus metrics of one service instance (own registry: no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The service's counters, gauges and histograms, registered on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instructions = Counter(
            "vpp_instructions", "Dispatch instructions received", ["kind", "result"], registry=r
        )
        self.allocation_seconds = Histogram(
            "vpp_allocation_seconds",
            "Time to compute set-points for one control step [s]",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0),
            registry=r,
        )
        self.devices_online = Gauge("vpp_devices_online", "Devices reporting fresh telemetry", registry=r)
        self.devices_enrolled = Gauge("vpp_devices_enrolled", "Devices enrolled", registry=r)
        self.telemetry_samples = Counter(
            "vpp_telemetry_samples", "Telemetry samples ingested into the store", ["adapter"], registry=r
        )
        self.setpoints_sent = Counter("vpp_setpoints_sent", "Set-points handed to adapters", ["adapter"], registry=r)
        self.adapter_errors = Counter("vpp_adapter_errors", "Adapter calls that failed", ["adapter", "operation"], registry=r)
        self.adapter_malformed = Counter(
            "vpp_adapter_malformed", "Frames or payloads an adapter received and could not use", ["adapter"], registry=r
        )
        self.plant_net_kw = Gauge("vpp_plant_net_kw", "Fleet net power, + into the park [kW]", registry=r)
        self.plant_available_up_kw = Gauge("vpp_plant_available_up_kw", "Fleet available upward [kW]", registry=r)
        self.plant_available_down_kw = Gauge("vpp_plant_available_down_kw", "Fleet available downward [kW]", registry=r)
        self.schedule_solves = Counter(
            "vpp_schedule_solves", "Battery schedule solves, by result (optimal, feasible, no_solution, error)", ["result"],
            registry=r,
        )
        self.http_requests = Counter("vpp_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r)
        self.http_rejected = Counter(
            "vpp_http_rejected", "HTTP requests refused at the edge (unauthorized, forbidden, body_too_large, rate_limited)",
            ["reason"], registry=r,
        )
        # Labelled children by label values: ``labels()`` takes a lock and builds a key on every call,
        # a cost paid per HTTP request; the set is bounded by routes x methods x statuses.
        self._http_answered: dict[tuple[str, str, int], Counter] = {}

    def http_answered(self, method: str, route: str, status: int) -> None:
        """Count one HTTP answer of ``status`` to ``method`` on the canonical ``route`` (``vpp_http_requests``)."""
        key = (method, route, status)
        child = self._http_answered.get(key)
        if child is None:
            child = self._http_answered[key] = self.http_requests.labels(method=method, route=route, status=str(status))
        child.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

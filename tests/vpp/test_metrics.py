"""The service's Prometheus metrics: HTTP answers counted per method, route and status."""

from __future__ import annotations

import re

from vpp.metrics import Metrics


def _count(text: str, labels: str) -> float:
    found = re.search(rf"^vpp_http_requests_total{{{re.escape(labels)}}} (\S+)$", text, re.MULTILINE)
    assert found, f"no vpp_http_requests_total{{{labels}}} in the exposition"
    return float(found.group(1))


def test_http_answers_are_counted_per_method_route_and_status():
    metrics = Metrics()
    for _ in range(3):
        metrics.http_answered("GET", "/api/v1/plant", 200)
    metrics.http_answered("GET", "/api/v1/plant", 401)
    metrics.http_answered("POST", "/api/v1/dispatch", 201)
    text = metrics.render().decode()
    assert _count(text, 'method="GET",route="/api/v1/plant",status="200"') == 3.0
    assert _count(text, 'method="GET",route="/api/v1/plant",status="401"') == 1.0
    assert _count(text, 'method="POST",route="/api/v1/dispatch",status="201"') == 1.0


def test_two_services_count_apart():
    first, second = Metrics(), Metrics()
    first.http_answered("GET", "/healthz", 200)
    assert "vpp_http_requests_total{" not in second.render().decode()

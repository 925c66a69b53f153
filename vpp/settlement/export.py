"""Statements as CSV: one line per statement row, money in fen and in CNY (exact strings)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from market import fen_to_cny_str

__all__ = ["CSV_COLUMNS", "statement_csv", "statement_rows"]

CSV_COLUMNS = (
    "month", "enterprise_id", "kind", "event_id", "programme", "event_date", "direction", "events",
    "requested_kwh", "baseline_kwh", "actual_kwh", "delivered_kwh", "ratio",
    "payment_fen", "penalty_fen", "capacity_fen", "cost_fen", "net_fen",
    "payment_cny", "penalty_cny", "capacity_cny", "cost_cny", "net_cny", "verified", "note",
)
"""Columns of the CSV export; kWh [kWh], money [fen] and [CNY]."""


def statement_rows(payloads: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The statement rows of enterprise statement payloads, with CNY amounts added (park summaries are skipped)."""
    rows = []
    for payload in payloads:
        if payload.get("kind") != "enterprise_statement":
            continue
        for row in payload["rows"]:
            money = {f"{name}_cny": fen_to_cny_str(row[f"{name}_fen"]) for name in ("payment", "penalty", "capacity", "cost", "net")}
            rows.append(dict(row) | money)
    return rows


def statement_csv(payloads: Iterable[Mapping[str, Any]]) -> str:
    """CSV text (header first) of the statement rows of enterprise statement payloads."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in statement_rows(payloads):
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_COLUMNS})
    return buffer.getvalue()

"""``vpp settlement …`` commands: settlement statements (issue 5).

``add_commands`` adds sub-commands; each sets ``run`` (an async function of
the parsed arguments returning the exit code) with ``set_defaults``.

* ``vpp settlement run --month 2026-07`` computes every enterprise's statement,
  records what changed in the ``settlement`` ledger and prints a summary table;
* ``vpp settlement export --month 2026-07 --format csv|json [--enterprise ID]``
  prints the recorded (latest, corrected) statements;
* ``vpp settlement prices --file prices.csv [--source spot|day_ahead]`` loads
  spot or day-ahead prices per 15-minute interval from CSV into the ``prices``
  ledger, as ``POST /api/v1/market/prices`` does (used by settlement when the
  programme sets ``use_spot_prices``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from market import PriceCsvError, fen_to_cny_str, load_price_csv_rows
from vpp.errors import InvalidInput
from vpp.settlement import SettlementService, load_config, parse_month, statement_csv

ArgsAdder = Callable[[argparse.ArgumentParser], None]


def add_commands(commands, store_args: ArgsAdder, client_args: ArgsAdder) -> None:
    """Register ``vpp settlement run`` and ``vpp settlement export`` on the ``vpp`` sub-parser set."""
    settlement = commands.add_parser("settlement", help="monthly settlement statements")
    sub = settlement.add_subparsers(dest="settlement_command", required=True)
    run = sub.add_parser("run", help="compute and record every enterprise's statement of a month")
    store_args(run)
    _common(run)
    run.set_defaults(run=_run)
    export = sub.add_parser("export", help="print the recorded statements of a month")
    store_args(export)
    _common(export)
    export.add_argument("--format", choices=["csv", "json"], default="csv", help="output format (default csv)")
    export.add_argument("--enterprise", help="only this enterprise (default: all, plus the park summary in json)")
    export.set_defaults(run=_export)
    prices = sub.add_parser("prices", help="load spot or day-ahead prices per 15-min interval from a CSV file")
    store_args(prices)
    prices.add_argument("--file", required=True, type=Path,
                        help="CSV with a header: interval_start and price_cny_per_mwh (or price_cny_per_kwh)")
    prices.add_argument("--source", choices=["spot", "day_ahead"], default="spot", help="price kind (default spot)")
    prices.set_defaults(run=_prices)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--month", required=True, type=_month, help="local month YYYY-MM")
    parser.add_argument("--config", type=Path, help="programme configuration, TOML or JSON (default: shipped)")


def _month(text: str) -> str:
    try:
        return parse_month(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _progress(stage: str, done: int, total: int) -> None:
    """One line on stderr every tenth of the way (long runs only)."""
    if total >= 20 and (done == total or done % max(1, total // 10) == 0):
        print(f"{stage}: {done}/{total} read", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> int:
    from vpp.store import open_store

    async with open_store(args.store, args.data_dir) as store:
        result = await SettlementService(store, load_config(args.config)).run(args.month, progress=_progress)
    print(summary_table(result.settlement.enterprises.values(), result.settlement.park))
    fixes = len(result.corrections)
    print(f"{len(result.written)} record(s) written ({fixes} correction(s)), {result.unchanged} unchanged")
    return 0


async def _export(args: argparse.Namespace) -> int:
    from vpp.store import open_store

    async with open_store(args.store, args.data_dir) as store:
        latest = await SettlementService(store, load_config(args.config)).latest(args.month)
    payloads = [r["payload"] for key, r in sorted(latest.items()) if args.enterprise in (None, key[1])]
    if args.enterprise and not payloads:
        raise ValueError(f"--enterprise {args.enterprise}: no statement recorded for {args.month}")
    if not payloads:
        raise ValueError(f"no statement recorded for {args.month}; run 'vpp settlement run --month {args.month}' first")
    if args.format == "csv":
        sys.stdout.write(statement_csv(payloads))
    else:
        print(json.dumps(payloads, indent=2, ensure_ascii=False))
    return 0


async def _prices(args: argparse.Namespace) -> int:
    from vpp.store import open_store

    try:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"--file {args.file}: cannot read it ({exc.strerror})") from None
    try:
        series = load_price_csv_rows(lines)
    except PriceCsvError as exc:
        raise ValueError(f"--file {args.file}: {exc}") from None
    if series.interval_start_utc.size == 0:
        raise ValueError(f"--file {args.file}: no price rows after the header")
    async with open_store(args.store, args.data_dir) as store:
        record = await SettlementService(store).push_prices(series, args.source, "cli")
    intervals = record["payload"]["intervals"]
    print(f"{len(intervals)} {args.source} price(s) from {intervals[0][0]} to {intervals[-1][0]} "
          f"recorded as prices ledger record {record['seq']}")
    return 0


def summary_table(enterprises: Any, park: dict[str, Any]) -> str:
    """Fixed-width table: enterprise, events, delivered [kWh], payment, penalties, capacity, costs and net [CNY]."""
    header = (f"{'enterprise':<16}{'events':>7}{'delivered kWh':>15}{'payment CNY':>14}{'penalties CNY':>15}"
              f"{'capacity CNY':>14}{'costs CNY':>12}{'net CNY':>14}")
    lines = [header]
    for payload in enterprises:
        total = next(row for row in payload["rows"] if row["kind"] == "total")
        lines.append(
            f"{payload['enterprise_id']:<16}{total['events']:>7}{total['delivered_kwh']:>15.1f}"
            f"{fen_to_cny_str(total['payment_fen']):>14}{fen_to_cny_str(total['penalty_fen']):>15}"
            f"{fen_to_cny_str(total['capacity_fen']):>14}{fen_to_cny_str(total['cost_fen']):>12}"
            f"{fen_to_cny_str(total['net_fen']):>14}"
        )
    totals = park["totals"]
    lines.append(
        f"{'park':<16}{len(park['events']):>7}{totals['delivered_kwh']:>15.1f}{fen_to_cny_str(totals['payment_fen']):>14}"
        f"{fen_to_cny_str(totals['penalty_fen']):>15}{fen_to_cny_str(totals['capacity_fen']):>14}"
        f"{fen_to_cny_str(totals.get('cost_fen', 0)):>12}{fen_to_cny_str(totals['net_fen']):>14}"
    )
    return "\n".join(lines)

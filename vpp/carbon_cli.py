"""``vpp carbon …`` commands: carbon attribution (issue 6).

``add_commands`` adds sub-commands; each sets ``run`` (an async function of
the parsed arguments returning the exit code) with ``set_defaults``.

* ``vpp carbon run --month 2026-07 [--settings FILE.json]``: compute the
  month from the store and record what changed in the ``carbon`` ledger;
  progress on stderr, a summary table per enterprise on stdout.
* ``vpp carbon export --month 2026-07 [--format csv|json] [--enterprise ID]``:
  the recorded (latest, corrected) figures.
* ``vpp carbon certificates issue|transfer|retire|list``: the certificate registry
  (``transfer --enterprise FROM --to TO --id ID...``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ArgsAdder = Callable[[argparse.ArgumentParser], None]

SUMMARY_COLUMNS = (
    ("consumption_kwh", "consumption kWh"), ("green_kwh", "green kWh"), ("renewable_share", "share"),
    ("matching_score", "15-min match"), ("location_based_kg", "loc. kgCO2"), ("market_based_kg", "mkt. kgCO2"),
    ("missing_intervals", "missing"),
)  # fmt: skip


def add_commands(commands, store_args: ArgsAdder, client_args: ArgsAdder) -> None:
    """Register ``vpp carbon run|export|certificates`` on the ``vpp`` sub-parser set."""
    carbon = commands.add_parser("carbon", help="carbon attribution ledger and certificates")
    sub = carbon.add_subparsers(dest="carbon_command", required=True)
    run = sub.add_parser("run", help="attribute a month and record it in the carbon ledger")
    store_args(run)
    run.add_argument("--month", required=True, help="local month, e.g. 2026-07")
    run.add_argument("--settings", type=Path, help="JSON file of carbon settings (targets, factors, production)")
    run.set_defaults(run=_run)
    export = sub.add_parser("export", help="print a recorded month as CSV or JSON")
    store_args(export)
    export.add_argument("--month", required=True, help="local month, e.g. 2026-07")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--enterprise", help="one enterprise (default: the park, every enterprise)")
    export.set_defaults(run=_export)
    certificates = sub.add_parser("certificates", help="issue, transfer, retire or list certificates")
    store_args(certificates)
    certificates.add_argument("action", choices=("issue", "transfer", "retire", "list"))
    certificates.add_argument("--enterprise", required=True, help="owner / consumer enterprise id")
    certificates.add_argument("--month", help="local month of the generation or consumption, e.g. 2026-07")
    certificates.add_argument("--kind", choices=("granular", "gec"), default="granular")
    certificates.add_argument("--id", action="append", default=[], help="certificate id to transfer or retire (repeatable)")
    certificates.add_argument("--to", help="enterprise receiving a transfer")
    certificates.set_defaults(run=_certificates)


def _settings(path: Path | None):
    from vpp.carbon.ledger import CarbonSettings

    if path is None:
        return CarbonSettings()
    try:
        return CarbonSettings.from_plain(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"--settings {path}: {exc}") from None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def _table(rows: dict[str, dict[str, Any]]) -> str:
    header = ["enterprise", *(title for _, title in SUMMARY_COLUMNS)]
    body = [[eid, *(_cell(row.get(key)) for key, _ in SUMMARY_COLUMNS)] for eid, row in sorted(rows.items())]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in [header, *body]]
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    from vpp.carbon.ledger import enterprise_rows, run_month
    from vpp.carbon.registry_ledger import load_registry
    from vpp.store import open_store

    settings = _settings(args.settings)
    async with open_store(args.store, args.data_dir) as store:
        report = await run_month(
            store, args.month, settings, await load_registry(store), progress=lambda m: print(m, file=sys.stderr, flush=True)
        )
    park = report.result.park
    print(_table(enterprise_rows(report.result)))
    print(
        f"park: renewable share {park.renewable_share:.3f} (target {park.target_share:.2f}, "
        f"{'met' if park.meets_target else 'not met'}), net imported fossil {park.net_imported_fossil_kwh:,.0f} kWh, "
        f"indirect {park.indirect_emissions_kg:,.0f} kgCO2, reconciled {park.reconciled}"
    )
    print(f"carbon ledger: {report.written} records written ({report.corrections} corrections), {report.unchanged} unchanged")
    return 0


async def _export(args: argparse.Namespace) -> int:
    from vpp.carbon.ledger import MONTH, latest_view
    from vpp.store import open_store

    async with open_store(args.store, args.data_dir) as store:
        view = await latest_view(store, args.month)
    if MONTH not in view:
        raise ValueError(f"--month {args.month}: not recorded yet; run 'vpp carbon run --month {args.month}'")
    record = view[MONTH]
    rows = record["enterprises"]
    if args.enterprise:
        if args.enterprise not in rows:
            raise ValueError(f"--enterprise {args.enterprise!r} has no record for {args.month}")
        rows = {args.enterprise: rows[args.enterprise]}
    if args.format == "json":
        body = {"month": args.month, "enterprises": rows}
        if not args.enterprise:
            body |= {"park": record["park"], "reconciliation": record["reconciliation"]}
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return 0
    columns = sorted({key for row in rows.values() for key in row})
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["enterprise_id", *columns])
    for eid, row in sorted(rows.items()):
        writer.writerow([eid, *("" if row.get(c) is None else row.get(c) for c in columns)])
    return 0


async def _certificates(args: argparse.Namespace) -> int:
    from vpp.carbon.certificates import CertificateError

    if args.action in ("issue", "retire") and not args.month:
        raise ValueError(f"--month is required to {args.action} certificates")
    try:
        await _certificate_action(args)
    except CertificateError as exc:
        raise ValueError(str(exc)) from None
    return 0


async def _certificate_action(args: argparse.Namespace) -> None:
    from vpp.carbon import registry_ledger
    from vpp.store import open_store

    async with open_store(args.store, args.data_dir) as store:
        if args.action == "issue":
            ids = await registry_ledger.issue(store, args.enterprise, args.month, args.kind)
            print(f"issued {len(ids)} certificates")
        elif args.action == "transfer":
            if not args.id or not args.to:
                raise ValueError("--id and --to are required to transfer certificates")
            if await store.get_enterprise(args.to) is None:
                raise ValueError(f"--to {args.to!r} is not an enterprise of the park")
            await registry_ledger.transfer(store, args.id, args.enterprise, args.to)
            print(f"transferred {len(args.id)} certificates from {args.enterprise} to {args.to}")
        elif args.action == "retire":
            if not args.id:
                raise ValueError("--id is required to retire certificates")
            for r in await registry_ledger.retire(store, args.enterprise, args.id, args.month):
                print(f"retired {r['volume_wh']} Wh of {r['certificate_id']} for {r['consumer_id']}")
        else:
            registry = await registry_ledger.load_registry(store)
            print(json.dumps(registry_ledger.certificate_rows(registry, args.enterprise), indent=2))

"""The ``vpp`` command: serve the plant, mint tokens, send and watch instructions.

Errors the user can fix are printed as one line on stderr with exit code 2;
nothing here prints a stack trace for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp

from vpp import carbon_cli, market_cli, settlement_cli
from vpp.errors import VppError
from vpp.grid_links import add_grid_link_args
from vpp.logs import configure_logging
from vpp.model import Role

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = "data"


class CliError(Exception):
    """A problem the user can fix; printed without a trace."""


# -- argument parsing -------------------------------------------------------------


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("VPP_DATA_DIR", DEFAULT_DATA_DIR)),
        help="where the SQLite store and demo tokens live (default: ./data or $VPP_DATA_DIR)",
    )
    parser.add_argument(
        "--store", default=os.environ.get("VPP_STORE"),
        help="store URL: sqlite:///path/file.sqlite3 or redis://host:port/db (default: SQLite in --data-dir)",
    )


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("VPP_URL", f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"), help="service URL (or $VPP_URL)")
    parser.add_argument("--token", default=os.environ.get("VPP_TOKEN"), help="bearer token (or $VPP_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpp", description="Virtual power plant service for an industrial park.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service (API, telemetry and dispatch loops)")
    _store_args(serve)
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--demo", action="store_true", help="run the simulated park and mint demo tokens")
    serve.add_argument("--enterprises", type=int, default=20, help="enterprises in the simulated park (default 20)")
    serve.add_argument("--seed", type=int, default=7, help="seed of the simulated park (default 7)")
    serve.add_argument("--speed", type=float, default=1.0, help="simulated time per wall second (default 1 = real time)")
    serve.add_argument("--control-interval", type=float, default=2.0, help="seconds between set-point updates (default 2)")
    serve.add_argument("--network", type=Path, default=None,
                       help="TOML/JSON file of the grid connection and feeder limits (see vpp/network.py)")
    serve.add_argument("--protocols", action="store_true",
                       help="with --demo: run the park over Modbus/SunSpec, OCPP, MQTT and IEC 104 on loopback")
    serve.add_argument("--mqtt-host", default="127.0.0.1", help="MQTT broker for --protocols (default 127.0.0.1)")
    serve.add_argument("--mqtt-port", type=int, default=1883, help="MQTT broker port (default 1883)")
    serve.add_argument("--mqtt-prefix", default="vpp", help="first topic level of the demo's MQTT topics (default vpp)")
    serve.add_argument("--iec104-port", type=int, default=2404,
                       help="IEC 104 outstation port for --iec104 or --protocols (default 2404; 0: a free one)")
    add_grid_link_args(serve)
    serve.add_argument(
        "--role", default=os.environ.get("VPP_ROLE", "all"), choices=["all", "api", "ingest", "dispatch"],
        help="part of the plant this process runs (default all: everything in one process); api, ingest and dispatch "
             "share a Redis --store, see docs/scale-out.md (or $VPP_ROLE)",
    )
    serve.add_argument("--lease", type=float, default=10.0,
                       help="--role dispatch: leader lock lease; a dead leader is replaced after it (default 10) [s]")
    serve.add_argument("--partitions", type=int, default=4,
                       help="ingest partitions of a new Redis namespace (fixed by the first process; default 4)")
    serve.add_argument("--claim-idle", type=float, default=10.0,
                       help="--role ingest: take over telemetry another worker left unacknowledged this long (default 10) [s]")
    serve.add_argument("--name", default=None, help="this process's name as lock holder / consumer (default host:pid:random)")

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="mint a token and print it (shown once)")
    _store_args(create)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--enterprise", help="enterprise id (required for --role enterprise)")
    create.add_argument("--label", default="", help="free text to recognise the token by")
    create.add_argument(
        "--days", type=float, default=None,
        help="expire the token this many days from now (default: never; revoke it with 'vpp token revoke')",
    )
    listing = token_commands.add_parser("list", help="list tokens: hash prefix, label, role, enterprise, dates (never secrets)")
    _store_args(listing)
    revoke = token_commands.add_parser("revoke", help="revoke a token; it is refused with 401 from then on")
    _store_args(revoke)
    revoke.add_argument("token", help="the token's secret, or at least 8 hex digits of its hash (from 'vpp token list')")

    dispatch = commands.add_parser("dispatch", help="send or show dispatch instructions")
    dispatch_commands = dispatch.add_subparsers(dest="dispatch_command", required=True)
    send = dispatch_commands.add_parser("send", help="send an instruction as the grid")
    _client_args(send)
    amount = send.add_mutually_exclusive_group(required=True)
    amount.add_argument("--delta-kw", type=float, help="change fleet power by this much; + = reduce park load [kW]")
    amount.add_argument("--target-kw", type=float, help="hold fleet net power at this value [kW]")
    send.add_argument("--minutes", type=float, default=15.0, help="duration (default 15)")
    send.add_argument("--start", help="ISO start time with zone (default: now)")
    send.add_argument("--id", help="instruction id (default: a new one); resend the same id safely")
    send.add_argument("--wait", action="store_true", help="follow the instruction until it finishes")
    show = dispatch_commands.add_parser("show", help="show an instruction's status")
    _client_args(show)
    show.add_argument("id")

    plant = commands.add_parser("plant", help="show the live plant")
    _client_args(plant)

    ledger = commands.add_parser("ledger", help="check the append-only ledgers")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_commands.add_parser("verify", help="find altered, removed or reordered records; exit 1 if any")
    _store_args(verify)
    verify.add_argument("--ledger", action="append", help="ledger name (repeatable; default: every ledger)")

    for module in (settlement_cli, carbon_cli, market_cli):
        module.add_commands(commands, _store_args, _client_args)
    return parser


# -- commands ----------------------------------------------------------------------


async def _token_create(args: argparse.Namespace) -> int:
    from vpp.auth import create_token
    from vpp.store import open_store

    role = Role(args.role)
    if (role is Role.ENTERPRISE) != bool(args.enterprise):
        raise CliError("--enterprise is required with --role enterprise and not allowed with other roles")
    if args.days is not None and not 0 < args.days <= 3650:
        raise CliError(f"--days must be more than 0 and at most 3650, got {args.days}")
    valid_for = None if args.days is None else timedelta(days=args.days)
    store = open_store(args.store, args.data_dir)
    async with store:
        if args.enterprise and await store.get_enterprise(args.enterprise) is None:
            raise CliError(f"enterprise '{args.enterprise}' does not exist in the store")
        secret = await create_token(store, role, args.enterprise, datetime.now(timezone.utc), args.label, valid_for)
    print(secret)
    return 0


TOKEN_LIST_COLUMNS = ("hash", "label", "role", "enterprise", "created", "expires", "revoked")


async def _token_list(args: argparse.Namespace) -> int:
    """Print every token's hash prefix and metadata; secrets are never stored, so never shown."""
    from vpp.store import open_store

    now = datetime.now(timezone.utc)
    async with open_store(args.store, args.data_dir) as store:
        tokens = await store.list_tokens()
    rows = [TOKEN_LIST_COLUMNS] + [_token_row(t, now) for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TOKEN_LIST_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _token_row(token, now: datetime) -> tuple[str, ...]:
    def when(ts: datetime | None) -> str:
        return "-" if ts is None else ts.strftime("%Y-%m-%dT%H:%MZ")

    expires = "never" if token.expires_at is None else when(token.expires_at) + (" (expired)" if now >= token.expires_at else "")
    revoked = (when(token.revoked_at) if token.revoked_at else "yes") if token.revoked else "no"
    return (token.token_sha256[:12], token.label or "-", token.role.value, token.enterprise_id or "-",
            when(token.created_at), expires, revoked)  # fmt: skip


async def _token_revoke(args: argparse.Namespace) -> int:
    from vpp.auth import revoke_token
    from vpp.store import open_store

    async with open_store(args.store, args.data_dir) as store:
        record, changed = await revoke_token(store, args.token, datetime.now(timezone.utc))
    state = "revoked" if changed else "was already revoked"
    print(f"token {record.token_sha256[:12]} ({record.role.value}{', ' + record.enterprise_id if record.enterprise_id else ''}"
          f"{', ' + record.label if record.label else ''}) {state}")
    return 0


async def _request(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    if not args.token:
        raise CliError("no token: pass --token or set VPP_TOKEN (mint one with 'vpp token create')")
    headers = {"Authorization": f"Bearer {args.token}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.request(method, args.url.rstrip("/") + path, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)
    except aiohttp.ClientError as exc:
        raise CliError(f"cannot reach {args.url}: {exc}") from None


def _print(body: dict) -> None:
    print(json.dumps(body, indent=2, ensure_ascii=False))


async def _dispatch_send(args: argparse.Namespace) -> int:
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(timezone.utc)
    if start.tzinfo is None:
        raise CliError(f"--start '{args.start}' has no timezone; add Z or +08:00")
    if args.minutes <= 0:
        raise CliError(f"--minutes must be positive, got {args.minutes}")
    body = {
        "id": args.id or f"cli-{uuid.uuid4().hex[:12]}",
        "kind": "delta" if args.delta_kw is not None else "target",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=args.minutes)).isoformat(),
    }
    body["delta_kw" if args.delta_kw is not None else "target_kw"] = args.delta_kw if args.delta_kw is not None else args.target_kw
    status, answer = await _request(args, "POST", "/api/v1/dispatch", body)
    _print(answer)
    if status >= 400:
        return 1
    if args.wait:
        return await _follow(args, body["id"])
    return 0


async def _follow(args: argparse.Namespace, instruction_id: str) -> int:
    """Print one line per poll until the instruction is no longer pending or active."""
    while True:
        status, answer = await _request(args, "GET", f"/api/v1/dispatch/{instruction_id}")
        if status >= 400:
            _print(answer)
            return 1
        print(_progress_line(answer["state"]), flush=True)
        state = answer["state"]
        if state["status"] not in ("pending", "active"):
            return 0
        await asyncio.sleep(2.0)


def _progress_line(state: dict) -> str:
    """One line of an instruction's progress: change asked of the fleet vs change delivered [kW], energy [kWh]."""
    if state["requested_kw"] is None or state["baseline_kw"] is None:
        return f"{state['updated_at']}  {state['status']:<9}  {state.get('message') or 'waiting for its start'}"
    asked_kw = state["requested_kw"] - state["baseline_kw"]
    return (
        f"{state['updated_at']}  {state['status']:<9}  fleet {state['baseline_kw']:+.1f} kW baseline, "
        f"asked {asked_kw:+.1f} kW, delivered {state['delivered_kw']:+.1f} kW  "
        f"({state['delivered_kwh']:.1f} of {state['requested_kwh']:.1f} kWh)"
    )


async def _get(args: argparse.Namespace, path: str) -> int:
    status, answer = await _request(args, "GET", path)
    _print(answer)
    return 0 if status < 400 else 1


async def _ledger_verify(args: argparse.Namespace) -> int:
    from vpp.chain import verify_chain
    from vpp.store import open_store

    async with open_store(args.store, args.data_dir) as store:
        names = args.ledger or await store.ledger_names()
        if not names:
            print("no ledger holds records yet")
            return 0
        broken = False
        for name in names:
            records = await store.ledger_records(name)
            problems = verify_chain(records)
            if problems:
                broken = True
                for problem in problems:
                    print(f"{name}: record {problem.seq}: {problem.kind}: {problem.message}")
            else:
                print(f"{name}: {len(records)} records, chain intact")
    return 1 if broken else 0


def _check_role(args: argparse.Namespace) -> None:
    """Refuse role options that cannot work together, before anything starts."""
    if args.role == "all":
        return
    if args.role not in ("api", "ingest", "dispatch"):
        raise CliError(f"--role {args.role!r} (or $VPP_ROLE): use all, api, ingest or dispatch")
    scheme = (args.store or "").split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise CliError(
            f"--role {args.role} shares the plant with other processes through Redis: pass --store redis://host:port/db "
            "(with SQLite only --role all runs)"
        )
    if args.protocols:
        raise CliError("--protocols runs only with --role all (the protocol demo is one process)")
    if args.speed != 1.0:
        raise CliError(f"--speed {args.speed}: processes of a scaled-out plant share real time; only --speed 1 runs with --role {args.role}")
    if args.lease <= 0 or args.claim_idle <= 0 or args.partitions < 1:
        raise CliError("--lease and --claim-idle must be positive and --partitions at least 1")


async def _run(args: argparse.Namespace) -> int:
    if getattr(args, "run", None) is not None:  # commands registered by feature modules
        return await args.run(args)
    if args.command == "ledger":
        return await _ledger_verify(args)
    if args.command == "serve":
        from vpp.server import serve

        _check_role(args)
        return await serve(args)
    if args.command == "token":
        commands = {"create": _token_create, "list": _token_list, "revoke": _token_revoke}
        return await commands[args.token_command](args)
    if args.command == "dispatch" and args.dispatch_command == "send":
        return await _dispatch_send(args)
    if args.command == "dispatch" and args.dispatch_command == "show":
        return await _get(args, f"/api/v1/dispatch/{args.id}")
    if args.command == "plant":
        return await _get(args, "/api/v1/plant")
    raise CliError(f"unknown command {args.command}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return asyncio.run(_run(args))
    except (CliError, VppError, ValueError) as exc:
        print(f"vpp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

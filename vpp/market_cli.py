"""``vpp market run``: one round of the simulated day-ahead market against a running service (issue 5).

``add_commands`` adds the sub-command; it sets ``run`` (an async function of
the parsed arguments returning the exit code) with ``set_defaults``.

``vpp market run --url http://127.0.0.1:8080 --token <grid token> [--hours 4]``
fetches the plant's live envelope (``GET /api/v1/plant/envelope``), builds the
plant's up and down bids from it (:func:`market.envelope_bids`), clears them
against seeded rival bids and demand in :mod:`simulators.market`, posts the
plant's awards back as dispatch instructions (``POST /api/v1/dispatch``) and
prints what it did: the round per interval, then each instruction and the
service's answer. Instruction ids are the prefix and the first interval's
start, so running the same round again changes nothing (200 instead of 201).
The simulator talks to loopback addresses only. Exit code 0 when every
instruction was accepted, 1 when the service refused one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

ArgsAdder = Callable[[argparse.ArgumentParser], None]


def add_commands(commands, store_args: ArgsAdder, client_args: ArgsAdder) -> None:
    """Register ``vpp market run`` on the ``vpp`` sub-parser set (``store_args`` is unused: it works over the API)."""
    market = commands.add_parser("market", help="simulated day-ahead market for the plant's bids")
    sub = market.add_subparsers(dest="market_command", required=True)
    run = sub.add_parser("run", help="bid the live envelope, clear one round, post the awards as instructions")
    client_args(run)
    run.add_argument("--hours", type=_positive, default=4.0, help="hours of envelope to bid (default 4)")
    run.add_argument("--seed", type=int, default=0, help="seed of the rival bidders and the demand (default 0)")
    run.add_argument("--rivals", type=int, default=3, help="rival bidders (default 3)")
    run.add_argument("--event-probability", type=_probability, default=0.5,
                     help="chance an interval has any demand, 0..1 (default 0.5)")
    run.add_argument("--prefix", default="mkt", help="first part of the instruction ids (default mkt)")
    run.set_defaults(run=_run)


def _positive(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 48.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 48 hours")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


async def _run(args: argparse.Namespace) -> int:
    import aiohttp

    from simulators.market import MarketSpec, run_round

    if not args.token:
        raise ValueError("--token: a grid token is needed (or set $VPP_TOKEN)")
    spec = MarketSpec(seed=args.seed, rivals=args.rivals, event_probability=args.event_probability)
    try:
        result, answers = await run_round(args.url, args.token, spec, hours=args.hours, prefix=args.prefix)
    except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
        raise ValueError(f"market round against {args.url} failed: {exc}") from None
    print(round_table(result))
    print(instruction_lines(answers))
    refused = [status for status, _ in answers if status not in (200, 201)]
    created = sum(status == 201 for status, _ in answers)
    print(f"{len(answers)} instruction(s) posted: {created} new, {len(answers) - created - len(refused)} already known, "
          f"{len(refused)} refused")
    return 1 if refused else 0


def _price(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.1f}"


def round_table(result: Any) -> str:
    """Per interval: start (UTC), demand and plant award up and down [kW], clearing prices [CNY/MWh]."""
    header = (f"{'interval start (UTC)':<22}{'up demand kW':>13}{'up won kW':>11}{'up CNY/MWh':>12}"
              f"{'down demand kW':>15}{'down won kW':>12}{'down CNY/MWh':>14}")
    lines = [header]
    for k, start in enumerate(result.starts):
        lines.append(
            f"{start.strftime('%Y-%m-%d %H:%M'):<22}{result.up_demand_kw[k]:>13.1f}{result.plant_up_kw[k]:>11.1f}"
            f"{_price(result.up_price_cny_per_mwh[k]):>12}{result.down_demand_kw[k]:>15.1f}"
            f"{result.plant_down_kw[k]:>12.1f}{_price(result.down_price_cny_per_mwh[k]):>14}"
        )
    won_up = float(result.plant_up_kw.sum()) * 0.25
    won_down = float(result.plant_down_kw.sum()) * 0.25
    lines.append(f"plant won {won_up:.1f} kWh up and {won_down:.1f} kWh down over {len(result.starts)} intervals")
    return "\n".join(lines)


def instruction_lines(answers: list[tuple[int, dict[str, Any]]]) -> str:
    """One line per posted instruction: HTTP status, id, window and delta [kW], or the error the service gave."""
    if not answers:
        return "no awards: nothing dispatched"
    lines = []
    for status, body in answers:
        instruction = body.get("instruction") if isinstance(body, dict) else None
        if instruction is None:
            message = body.get("error", {}).get("message", body) if isinstance(body, dict) else body
            lines.append(f"{status} refused: {message}")
        else:
            lines.append(f"{status} {instruction['id']} {instruction['start']} .. {instruction['end']} "
                         f"delta {instruction['delta_kw']:+.1f} kW")
    return "\n".join(lines)

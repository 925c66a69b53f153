"""``vpp settlement …`` commands: settlement statements (issue 5).

``add_commands`` adds sub-commands; each sets ``run`` (an async function of
the parsed arguments returning the exit code) with ``set_defaults``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

ArgsAdder = Callable[[argparse.ArgumentParser], None]


def add_commands(commands, store_args: ArgsAdder, client_args: ArgsAdder) -> None:
    """Register this module's commands on the ``vpp`` sub-parser set (none yet)."""

"""Running parts of a scaled-out plant in tests: `vpp serve --role …` children, the same roles in-process, a private Redis.

Children are the parts a test kills (SIGKILL, SIGTERM); the parts that survive
run in the test's own event loop through ``vpp.cluster.serve_role`` (the same
code a child runs), which saves the seconds each child spends importing.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from vpp.cli import build_parser
from vpp.cluster import serve_role

LISTENING = re.compile(r"listening on (http://\S+)")


class Child:
    """A ``vpp serve`` child process; its stdout and stderr go to files in ``workdir``."""

    def __init__(self, workdir: Path, name: str, *argv: str) -> None:
        self.name = name
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.log"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vpp.cli", "serve", "--port", "0", "--name", name, *argv], stdout=out, stderr=err
            )

    async def url(self, timeout_s: float = 90.0) -> str:
        """The URL the child printed once listening; fails with its log if it exits or never prints it."""
        for _ in range(int(timeout_s / 0.1)):
            found = LISTENING.search(self.out.read_text())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} printed no URL within {timeout_s} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.err.read_text()[-chars:] if self.err.exists() else "(no log)"

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def wait(self, timeout_s: float = 30.0) -> int:
        """The exit code; a child still running after ``timeout_s`` is killed and fails the test."""
        for _ in range(int(timeout_s / 0.1)):
            if self.process.poll() is not None:
                return self.process.returncode
            await asyncio.sleep(0.1)
        self.process.kill()
        self.process.wait()
        raise AssertionError(f"{self.name} still ran {timeout_s} s after it was told to stop; killed:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL if still running (test clean-up)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


class InProcess:
    """A role run by ``serve_role`` in the test's event loop, stopped as SIGTERM would stop it."""

    def __init__(self, *argv: str) -> None:
        self.args = build_parser().parse_args(["serve", "--port", "0", *argv])
        self.stop_event = asyncio.Event()
        self._url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(serve_role(self.args, self.stop_event, self._url.set_result))

    async def url(self) -> str:
        await asyncio.wait({self._url, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not self._url.done():
            self.task.result()  # raises what stopped it
            raise AssertionError("role returned before listening")
        return self._url.result()

    def alive(self) -> bool:
        return not self.task.done()

    async def stop(self) -> int:
        self.stop_event.set()
        return await asyncio.wait_for(self.task, timeout=30)


def demo_tokens(data_dir: Path) -> dict[str, str]:
    """The tokens an API process started with --demo minted."""
    return json.loads((data_dir / "demo-tokens.json").read_text())


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of the test's own on a spare loopback port, append-only with fsync on every write.

    Restarting it keeps every write it acknowledged; the machine's shared Redis is never touched.
    """

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            for _ in range(100):
                try:
                    if await client.ping():
                        return
                except Exception:
                    await asyncio.sleep(0.05)
            raise AssertionError(f"redis-server on port {self.port} did not answer")
        finally:
            await client.aclose()

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the append-only file already holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

"""Helpers of the MQTT tests: a unique topic prefix, waiting for a condition, a private broker.

The shared broker is the machine's Mosquitto at 127.0.0.1:1883; every test
uses its own random prefix so parallel runs never see each other's topics,
and clears the retained messages it left. A test that takes the broker away
starts its own Mosquitto on a free loopback port instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiomqtt

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883


def unique_prefix() -> str:
    return f"vpp-test-{uuid.uuid4().hex[:12]}"


async def eventually(condition: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    """Wait until ``condition()`` is truthy; fail naming ``what`` if it never is (a liveness bound, not a speed check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def clear_retained(prefix: str, host: str = BROKER_HOST, port: int = BROKER_PORT) -> int:
    """Delete every retained message below ``prefix`` (an empty retained payload deletes one); returns how many."""
    topics: set[str] = set()
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(f"{prefix}/#")

        async def collect() -> None:
            async for message in client.messages:
                if message.retain and message.payload:
                    topics.add(message.topic.value)

        collector = asyncio.ensure_future(collect())
        await asyncio.sleep(0.3)  # retained messages come right after the SUBACK
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)
    return len(topics)


async def raw_publish(prefix_topic_payloads: list[tuple[str, bytes]], host: str = BROKER_HOST, port: int = BROKER_PORT) -> None:
    """Publish raw payloads with QoS 1 from a plain client (garbage a real gateway might send)."""
    async with aiomqtt.Client(host, port) as client:
        for topic, payload in prefix_topic_payloads:
            await client.publish(topic, payload, qos=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateBroker:
    """A Mosquitto of this test only, on a loopback port, that can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = workdir / "mosquitto.log"
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([binary, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private mosquitto did not start: {self.log.read_text()[-500:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._proc = None

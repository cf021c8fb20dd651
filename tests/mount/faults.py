"""Helpers for fault-injection tests on real mounts: truth from Graph, storms, timed commands.

``graph_truth`` reads what each file of a folder must contain straight from the emulator
through Graph. ``Storm`` adds latency spikes and bursts of 429 answers on top of steady
fault rates, from a thread that turns the emulator's knobs while a test copies.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.emulator import Emulator, enc


def folder_id(emulator: Emulator, mailbox: str, name: str) -> str:
    """The id of the top-level folder called name."""
    for folder in emulator.list_folders(mailbox):
        if folder["displayName"] == name:
            return str(folder["id"])
    raise LookupError(name)


def graph_truth(emulator: Emulator, mailbox: str, folder: str) -> dict[str, str]:
    """File name -> SHA-256 of its content, for a folder of single-named file attachments.

    The names are those the mount gives when subject and attachment name are plain text:
    ``<subject>-<attachment name>``.
    """
    truth: dict[str, str] = {}
    with emulator.client() as client:
        for message in emulator.list_messages(mailbox, folder_id(emulator, mailbox, folder)):
            for attachment in message["attachments"]:
                url = (
                    f"/users/{enc(mailbox)}/messages/{enc(message['id'])}"
                    f"/attachments/{enc(attachment['id'])}/$value"
                )
                response = client.get(url)
                response.raise_for_status()
                name = f"{message['subject']}-{attachment['name']}"
                truth[name] = hashlib.sha256(response.content).hexdigest()
    return truth


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Timed:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def timed(*command: str, timeout: float = 120) -> Timed:
    """Run a command; its exit status, output and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, errors="replace", timeout=timeout
    )
    return Timed(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def wait_until(condition: Callable[[], bool], timeout: float = 15, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


class Storm:
    """Steady fault rates plus, every ``period`` seconds, a latency spike or a 429 burst.

    Spikes and bursts alternate: a spike sets ``spike_ms`` of latency for ``spike_s``
    seconds, a burst answers every request 429 for ``burst_s`` seconds. The emulator's
    settings go back to their start values when the storm ends.
    """

    def __init__(
        self,
        emulator: Emulator,
        steady: dict[str, Any],
        *,
        period: float = 1.5,
        spike_ms: float = 400,
        spike_s: float = 0.4,
        burst_s: float = 0.3,
    ) -> None:
        self.emulator = emulator
        self.steady = steady
        self.period = period
        self.spike_ms = spike_ms
        self.spike_s = spike_s
        self.burst_s = burst_s
        self.spikes = 0
        self.bursts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm", daemon=True)

    def __enter__(self) -> Storm:
        self.emulator.set_faults(**self.steady)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.emulator.reset_faults()

    def _run(self) -> None:
        steady_latency = self.steady.get("latency_ms", 0)
        steady_throttle = self.steady.get("throttle_rate", 0.0)
        while not self._stop.wait(self.period):
            if self.spikes <= self.bursts:
                self.emulator.set_faults(latency_ms=self.spike_ms)
                self._stop.wait(self.spike_s)
                self.emulator.set_faults(latency_ms=steady_latency)
                self.spikes += 1
            else:
                self.emulator.set_faults(throttle_rate=1.0)
                self._stop.wait(self.burst_s)
                self.emulator.set_faults(throttle_rate=steady_throttle)
                self.bursts += 1

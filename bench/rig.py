"""The benchmark rig: an emulator with a synthetic mailbox, real mounts of it, timing helpers.

Everything runs for real: the emulator is its own process serving HTTPS with the injected
latency, and ``exchange-mount`` is started as a process and driven by ordinary tools (``ls``,
``cp``, ``cat``) in subprocesses, as a user would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.support.emulator import Emulator, running_emulator
from tests.support.mount import emulator_arguments, fuse_mounted

log = logging.getLogger(__name__)

# The Outlook budget of 10,000 requests per 10 minutes per mailbox is Graph's; warming a
# 20,000-file folder would run into it and measure the wait, not the mount.
_UNLIMITED_BUDGET = "100000000"
_MOUNT_TIMEOUT = 120.0
_POLL_STEP = 0.01


@dataclass(frozen=True, slots=True)
class Options:
    """What every benchmark needs to know about this run."""

    work: Path
    latency_ms: float
    quick: bool
    o365_venv: Path | None = None
    profile: bool = False


@contextlib.contextmanager
def emulator(options: Options, name: str, specs: Sequence[str], *extra: str) -> Iterator[Emulator]:
    """An emulator serving the generated mailboxes of ``specs`` with the run's latency."""
    arguments: list[str] = []
    for spec in specs:
        arguments += ["--generate", spec]
    arguments += ["--latency-ms", f"{options.latency_ms:g}"]
    arguments += ["--mailbox-budget", _UNLIMITED_BUDGET, "--log-level", "WARNING", *extra]
    with running_emulator(options.work / name / "emulator", *arguments) as running:
        yield running


def enc(identifier: str) -> str:
    return quote(identifier, safe="")


def folder_ids(emulator: Emulator, mailbox: str) -> dict[str, str]:
    """Folder ids by display path ("Inbox/Folder 01")."""
    folders = emulator.list_folders(mailbox)
    by_id = {folder["id"]: folder for folder in folders}
    paths: dict[str, str] = {}
    for folder in folders:
        parts = [folder["displayName"]]
        parent = by_id.get(folder.get("parentFolderId"))
        while parent is not None:
            parts.append(parent["displayName"])
            parent = by_id.get(parent.get("parentFolderId"))
        paths["/".join(reversed(parts))] = folder["id"]
    return paths


def materialise(emulator: Emulator, mailbox: str, folder_id: str) -> None:
    """Make the emulator build a generated folder now, so no timed listing pays for it."""
    with emulator.client() as client:
        url = f"/users/{enc(mailbox)}/mailFolders/{enc(folder_id)}/messages?$top=1"
        client.get(url).raise_for_status()


def start_change_sequence(emulator: Emulator, mailbox: str) -> None:
    """Make one change in the mailbox before a mount polls it.

    The emulator numbers changes per mailbox, and a generated mailbox that nothing has
    changed is still at 0; the emulator then answers every delta round as a first round
    (everything that exists), where Graph would answer "no changes". One change avoids it.
    """
    emulator.create_folder(mailbox, "msgfolderroot", "Changed once")


def graph_requests(stats: dict[str, Any]) -> int:
    """HTTP requests Graph answered: a JSON batch counts once (token requests do not)."""
    return int(stats["http_requests"])


def requests_by_route(stats: dict[str, Any]) -> str:
    """A short text of request counts by route, for the details."""
    parts = []
    for route, statuses in sorted(stats["requests"].items()):
        count = sum(statuses.values())
        short = route.replace("/users/{mailbox}", "").replace("{folder}", "F")
        parts.append(f"{count} {short}")
    return ", ".join(parts) or "none"


def wait_quiet(emulator: Emulator, quiet: float = 1.0, timeout: float = 300.0) -> None:
    """Wait until the emulator has had no request for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = -1
    since = time.monotonic()
    while time.monotonic() < deadline:
        stats = emulator.stats()
        count = graph_requests(stats)
        if count != last or stats["in_flight"]:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the emulator kept serving requests for {timeout:.0f} s")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(command: Sequence[str | Path], *, cwd: Path | None = None) -> float:
    """Run a command with its output discarded; its wall-clock seconds."""
    started = time.perf_counter()
    subprocess.run(
        [str(part) for part in command],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )
    return time.perf_counter() - started


def count_lines(command: Sequence[str | Path]) -> tuple[float, int]:
    """Run a command; its seconds and the number of lines it printed."""
    started = time.perf_counter()
    result = subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return time.perf_counter() - started, len(result.stdout.splitlines())


def tree_bytes(root: Path) -> tuple[int, int]:
    """(files, bytes) under a local directory."""
    files = size = 0
    for directory, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(directory, name)).st_size
    return files, size


# -- mounts -------------------------------------------------------------------------------


@dataclass
class Mount:
    """A running ``exchange-mount`` process and its mountpoint."""

    process: subprocess.Popen[bytes]
    mountpoint: Path
    log_path: Path
    started_in: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory of the mount process."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Unmount the way systemd would (SIGTERM), then make sure nothing is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log.warning("mount at %s did not stop on SIGTERM", self.mountpoint)
        if fuse_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def mount_arguments(
    emulator: Emulator, mailbox: str, secret_file: Path, cache_dir: Path
) -> list[str]:
    """The options that point exchange-mount at the emulator, with the poller out of the way."""
    arguments = emulator_arguments(emulator, mailbox, secret_file)
    secret_file.chmod(0o600)
    return [
        *arguments,
        "--cache-dir", str(cache_dir),
        "--poll-interval", "3600",
        "--log-level", "warning",
    ]  # fmt: skip


def start_mount(mountpoint: Path, arguments: Sequence[str], log_path: Path) -> Mount:
    """Start exchange-mount in the foreground; returns once the mount answers."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "exchange_fuse", str(mountpoint), *arguments],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    mount = Mount(process, mountpoint, log_path)
    deadline = started + _MOUNT_TIMEOUT
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exchange-mount exited with {process.returncode}: {mount.log()}")
        if fuse_mounted(mountpoint) and _answers(mountpoint):
            mount.started_in = time.perf_counter() - started
            return mount
        time.sleep(_POLL_STEP)
    mount.stop()
    raise RuntimeError(f"exchange-mount did not mount within {_MOUNT_TIMEOUT:.0f} s")


def _answers(mountpoint: Path) -> bool:
    try:
        os.statvfs(mountpoint)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def mounted(
    emulator: Emulator,
    mailbox: str,
    directory: Path,
    *extra: str,
    cache_dir: Path | None = None,
) -> Iterator[Mount]:
    """A mount of ``mailbox`` at ``directory/mnt``, stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    arguments = mount_arguments(
        emulator, mailbox, directory / "secret", cache_dir or directory / "cache"
    )
    mount = start_mount(directory / "mnt", [*arguments, *extra], directory / "mount.log")
    try:
        yield mount
    finally:
        mount.stop()

"""Real mounts for tests: ``exchange-mount`` in a subprocess against a running emulator.

The mount is always taken down, even when a test fails: SIGTERM first (a clean unmount is
part of what is tested), then ``fusermount3 -u -z`` and a kill for whatever is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def fuse_mounted(mountpoint: Path) -> bool:
    """Whether a FUSE filesystem is mounted exactly at mountpoint."""
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            separator = fields.index("-")
            path = fields[4].encode().decode("unicode_escape")
            if path == target and fields[separator + 1].startswith("fuse"):
                return True
    return False


def _answers(mountpoint: Path) -> bool:
    """Whether a live daemon serves the mount (a dead one answers ENOTCONN)."""
    try:
        os.statvfs(mountpoint)
    except OSError:
        return False
    return True


def emulator_arguments(emulator: Any, mailbox: str, secret_file: Path) -> list[str]:
    """The exchange-mount options that point it at an emulator."""
    secret_file.write_text(emulator.client_secret)
    return [
        "--tenant", emulator.tenant_id,
        "--client-id", emulator.client_id,
        "--client-secret-file", str(secret_file),
        "--mailbox", mailbox,
        "--graph-url", emulator.graph_url,
        "--authority-url", emulator.authority_url,
        "--ca-bundle", emulator.ca_bundle,
    ]  # fmt: skip


@dataclass
class MountProcess:
    process: subprocess.Popen[bytes]
    mountpoint: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        """Ask the daemon to unmount and exit, as systemd or Ctrl-C would."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_mount(
    mountpoint: Path,
    arguments: list[str],
    log_path: Path,
    timeout: float = 60,
    *,
    environment: dict[str, str] | None = None,
    pass_mountpoint: bool = True,
) -> MountProcess:
    """Start exchange-mount in the foreground and wait until the mount answers."""
    command = [sys.executable, "-m", "exchange_fuse"]
    command += [str(mountpoint), *arguments] if pass_mountpoint else arguments
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=environment,
        )
    mount = MountProcess(process, mountpoint, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"exchange-mount exited with {process.returncode}:\n{mount.log()[-4000:]}"
            )
        if fuse_mounted(mountpoint) and _answers(mountpoint):
            return mount
        time.sleep(0.05)
    tear_down(mount)
    raise RuntimeError(f"exchange-mount did not mount within {timeout} s:\n{mount.log()[-4000:]}")


def tear_down(mount: MountProcess) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        mount.stop(timeout=15)
    if fuse_mounted(mount.mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mount.mountpoint)], check=False)
    if mount.process.poll() is None:
        mount.process.kill()
        mount.process.wait(timeout=10)


@contextlib.contextmanager
def mounted(
    mountpoint: Path, arguments: list[str], log_path: Path, timeout: float = 60
) -> Iterator[MountProcess]:
    mount = start_mount(mountpoint, arguments, log_path, timeout)
    try:
        yield mount
    finally:
        tear_down(mount)

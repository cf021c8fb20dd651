"""Running as a systemd service: the unit file, the notify protocol, credentials, logs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.emulator import Emulator, running_emulator
from tests.support.mount import start_mount, tear_down

REPOSITORY = Path(__file__).resolve().parents[2]
UNIT = REPOSITORY / "systemd" / "exchange-fuse@.service"
MAILBOX = "service@example.com"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state = tmp_path_factory.mktemp("emulator")
    description = state / "service.json"
    description.write_text(
        json.dumps(
            {
                "messages": [
                    {"subject": "Report", "attachments": [{"name": "r.csv", "content": "1,2"}]}
                ]
            }
        )
    )
    with running_emulator(state, f"--mailbox={MAILBOX}={description}") as running:
        yield running


def installed_command() -> str:
    command = shutil.which("exchange-mount") or str(
        Path(sys.executable).with_name("exchange-mount")
    )
    assert os.access(command, os.X_OK), command
    return command


def test_the_unit_file_verifies(tmp_path: Path) -> None:
    # Point ExecStart at this installation, as an administrator's symlink would.
    instance = tmp_path / "exchange-fuse@invoices.service"
    instance.write_text(
        UNIT.read_text().replace("/usr/local/bin/exchange-mount", installed_command())
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(instance)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr

    text = UNIT.read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "LoadCredential=client-secret:",
        "CacheDirectory=",
        "Restart=on-failure",
        "After=network-online.target",
        "NoNewPrivileges=yes",
        "DeviceAllow=/dev/fuse rw",
    ):
        assert setting in text, setting


class NotifySocket:
    """The systemd side of the notify protocol: a datagram socket that collects messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, key: str, timeout: float = 30) -> str:
        return self._wait(lambda line: line == key, key, timeout)

    def wait_for_prefix(self, prefix: str, timeout: float = 30) -> str:
        return self._wait(lambda line: line.startswith(prefix), prefix, timeout)

    def _wait(self, matches: Callable[[str], bool], key: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if any(matches(line) for line in message.splitlines()):
                    self.messages.remove(message)
                    return message
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.socket.recv(4096).decode())
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")


def test_an_instance_started_the_way_systemd_does_it(emulator: Emulator, tmp_path: Path) -> None:
    """--config only, secret from $CREDENTIALS_DIRECTORY, cache in $CACHE_DIRECTORY, notify."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "client-secret").write_text(emulator.client_secret + "\n")
    config = tmp_path / "invoices.toml"
    config.write_text(
        f'mountpoint = "{mountpoint}"\n'
        f'tenant = "{emulator.tenant_id}"\n'
        f'client_id = "{emulator.client_id}"\n'
        f'mailbox = ["{MAILBOX}"]\n'
        f'graph_url = "{emulator.graph_url}"\n'
        f'authority_url = "{emulator.authority_url}"\n'
        f'ca_bundle = "{emulator.ca_bundle}"\n'
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    environment = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "2000000",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "CACHE_DIRECTORY": str(tmp_path / "cache"),
    }
    mounted = start_mount(
        mountpoint,
        ["--config", str(config)],
        tmp_path / "log",
        environment=environment,
        pass_mountpoint=False,
    )
    try:
        ready = notify.wait_for("READY=1")
        assert "folders" in ready and "files listed" in ready
        assert (mountpoint / "Inbox" / "Report-r.csv").read_text() == "1,2"
        notify.wait_for("WATCHDOG=1", timeout=10)
        notify.wait_for("WATCHDOG=1", timeout=10)
        status = notify.wait_for_prefix("STATUS=", timeout=10)
        assert "Graph requests" in status and "throttled" in status
        assert list((tmp_path / "cache").iterdir()), "the cache goes to $CACHE_DIRECTORY"

        assert mounted.stop() == 0
        notify.wait_for("STOPPING=1")
    finally:
        tear_down(mounted)
    assert emulator.client_secret not in mounted.log()


def test_logs_use_journal_priorities_under_systemd_and_never_show_secrets(
    emulator: Emulator, tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log_path = tmp_path / "journal"
    log_path.touch()
    status = os.stat(log_path)
    environment = {
        **os.environ,
        "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}",
        "EXCHANGE_FUSE_CLIENT_SECRET": emulator.client_secret,
    }
    arguments = [
        "--tenant", emulator.tenant_id, "--client-id", emulator.client_id,
        "--mailbox", MAILBOX, "--graph-url", emulator.graph_url,
        "--authority-url", emulator.authority_url, "--ca-bundle", emulator.ca_bundle,
        "--cache-dir", str(tmp_path / "cache"), "--log-level", "debug",
    ]  # fmt: skip
    mounted = start_mount(mountpoint, arguments, log_path, environment=environment)
    try:
        subprocess.run(["cp", "-r", str(mountpoint), str(tmp_path / "copy")], check=True)
        assert mounted.stop() == 0
    finally:
        tear_down(mounted)

    lines = [line for line in log_path.read_text().splitlines() if line]
    assert lines and all(line[:3] in {"<7>", "<6>", "<4>", "<3>"} for line in lines), lines[:5]
    text = log_path.read_text()
    assert emulator.client_secret not in text
    assert "Bearer" not in text and "eyJ" not in text  # no tokens
    assert "1,2" not in text  # no attachment content

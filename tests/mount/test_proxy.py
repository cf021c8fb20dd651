"""An HTTPS proxy between the mount and Graph: sign-in and files both go through it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.conftest import MountFactory
from tests.support.emulator import Emulator, running_emulator

MAILBOX = "proxied@example.com"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    description = tmp_path / "mailbox.json"
    description.write_text(
        json.dumps(
            {"messages": [{"subject": "Via", "attachments": [{"name": "p.txt", "content": "p"}]}]}
        )
    )
    with running_emulator(tmp_path / "emulator", f"--mailbox={MAILBOX}={description}") as running:
        yield running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def proxy(tmp_path: Path, emulator: Emulator) -> Iterator[tuple[str, Path]]:
    """tinyproxy on loopback, allowed to CONNECT to the emulator's port only."""
    port = free_port()
    emulator_port = emulator.graph_url.split(":")[2].split("/")[0]
    log = tmp_path / "tinyproxy.log"
    config = tmp_path / "tinyproxy.conf"
    config.write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile "{log}"\nLogLevel Connect\n'
        f"Allow 127.0.0.1\nConnectPort {emulator_port}\nMaxClients 20\n"
    )
    process = subprocess.Popen(["tinyproxy", "-d", "-c", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "tinyproxy did not start"
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_sign_in_and_downloads_go_through_the_proxy(
    emulator: Emulator, proxy: tuple[str, Path], mount: MountFactory
) -> None:
    url, log = proxy
    inbox = mount(emulator, MAILBOX, "--proxy", url).mountpoint / "Inbox"
    assert (inbox / "Via-p.txt").read_text() == "p"
    # One tunnel for the token endpoint (MSAL), one at least for Graph.
    assert log.read_text().count("CONNECT") >= 2, log.read_text()

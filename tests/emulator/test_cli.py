"""The command line: what it writes at start, and how it refuses bad arguments."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.emulator import running_emulator


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange_fuse.emulator", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "nothing to serve"),
        (("--mailbox", "no-at-sign=/tmp"), "ADDRESS=PATH"),
        (("--mailbox", "a@example.com=/does/not/exist"), "no such file"),
        (("--generate", "folders=3"), "address"),
        (("--generate", "address=a@example.com,colour=blue"), "unknown key 'colour'"),
        (("--demo", "--error-rate", "418=0.5"), "STATUS=RATE"),
        (("--demo", "--cut-rate", "2"), "not between 0 and 1"),
        (("--demo", "--quirk", "size_overhead=maybe"), "NAME=on|off"),
        (("--demo", "--port", "70000"), "not a port"),
        (("--demo", "--no-such-flag"), "unrecognized arguments"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args: tuple[str, ...], words: str) -> None:
    result = _run(*args)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("exchange-graph-emulator: error: ")
    assert words in lines[0]
    assert "Traceback" not in result.stderr


def test_unreadable_directory_is_reported(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    source = tmp_path / "plain-file.txt"
    source.write_text("not mail")

    result = _run("--mailbox", f"a@example.com={source}")

    assert result.returncode == 2
    assert "expected a directory of .eml files" in result.stderr


def test_state_file_describes_the_running_emulator(tmp_path: Path) -> None:
    with running_emulator(tmp_path, "--demo", "--client-secret", "s3cret") as emulator:
        state = json.loads((tmp_path / "emulator.json").read_text())
        assert state["graph_url"].startswith("https://127.0.0.1:")
        assert state["graph_url"].endswith("/v1.0")
        assert (
            state["authority_url"]
            == state["graph_url"][: -len("/v1.0")] + "/" + (state["tenant_id"])
        )
        assert state["control_url"].endswith("/_emulator")
        assert state["client_secret"] == "s3cret"
        assert state["ca_bundle"] == str(tmp_path / "ca.pem")
        assert Path(state["ca_bundle"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert state["mailboxes"] == ["demo@example.com"]
        assert emulator.token()
        process = emulator.process
    # Stopped by SIGTERM: a clean exit, and the state file is gone.
    assert process.returncode == 0
    assert not (tmp_path / "emulator.json").exists()


def test_a_port_in_use_is_reported_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("--demo", "--state-dir", str(tmp_path), "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "exchange-graph-emulator: error: cannot serve: [Errno 98] Address already in use"
    )
    assert not (tmp_path / "emulator.json").exists()

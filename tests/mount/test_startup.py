"""Starting and stopping a mount: clear one-line errors, clean unmounts, dead mounts, demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import Emulator, running_emulator
from tests.support.mount import emulator_arguments, fuse_mounted, start_mount, tear_down

MAILBOX = "team@example.com"
DENIED = "ceo@example.com"
ON_PREMISES = "legacy@example.com"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state = tmp_path_factory.mktemp("emulator")
    description = state / "team.json"
    description.write_text(
        json.dumps(
            {
                "messages": [
                    {
                        "subject": "Hello",
                        "attachments": [{"name": "a.txt", "content": "hello"}],
                    }
                ]
            }
        )
    )
    empty = state / "empty.json"
    empty.write_text("{}")
    with running_emulator(
        state,
        f"--mailbox={MAILBOX}={description}",
        f"--mailbox={DENIED}={empty}",
        f"--mailbox={ON_PREMISES}={empty}",
        f"--deny={DENIED}",
        f"--disable={ON_PREMISES}",
    ) as running:
        yield running


def exchange_mount(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange_fuse", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def arguments_for(emulator: Emulator, tmp_path: Path, mailbox: str = MAILBOX) -> list[str]:
    return [
        *emulator_arguments(emulator, mailbox, tmp_path / "secret"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    if fuse_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False)


def test_wrong_secret_is_one_sentence_and_nothing_is_mounted(
    emulator: Emulator, tmp_path: Path, mountpoint: Path
) -> None:
    arguments = arguments_for(emulator, tmp_path)
    (tmp_path / "secret").write_text("not-the-secret")
    result = exchange_mount(str(mountpoint), *arguments)
    assert_one_line_error(result, "sign-in failed", "secret")
    assert not fuse_mounted(mountpoint)


@pytest.mark.parametrize(
    ("mailbox", "words"),
    [
        (DENIED, ("access denied", "access policy")),
        (ON_PREMISES, ("not reachable", "Exchange Online")),
        ("nobody@example.com", ("nobody@example.com", "check the address")),
    ],
)
def test_mailbox_problems_are_explained(
    emulator: Emulator, tmp_path: Path, mountpoint: Path, mailbox: str, words: tuple[str, ...]
) -> None:
    result = exchange_mount(str(mountpoint), *arguments_for(emulator, tmp_path, mailbox))
    assert_one_line_error(result, *words)
    assert not fuse_mounted(mountpoint)


def test_missing_mountpoint_and_bad_options(emulator: Emulator, tmp_path: Path) -> None:
    arguments = arguments_for(emulator, tmp_path)
    assert_one_line_error(exchange_mount(str(tmp_path / "absent"), *arguments), "does not exist")
    assert_one_line_error(
        exchange_mount(str(tmp_path), *arguments, "--cache-max-size", "lots"),
        "--cache-max-size",
        "lots",
    )
    assert_one_line_error(
        exchange_mount(str(tmp_path), *arguments, "--cache-dir", "/proc/no-cache-here"),
        "cache_dir",
        "writable",
    )
    assert_one_line_error(
        exchange_mount(str(tmp_path), *arguments, "--proxy", "notaurl"), "--proxy"
    )
    config = tmp_path / "mount.toml"
    config.write_text('tenant = "t"\npoll_intervall = 5\n')
    assert_one_line_error(
        exchange_mount("--demo", "--config", str(config), str(tmp_path)), "--demo"
    )
    assert_one_line_error(exchange_mount(str(tmp_path), "--config", str(config)), "poll_intervall")


def test_already_mounted_is_refused(emulator: Emulator, tmp_path: Path, mountpoint: Path) -> None:
    first = start_mount(mountpoint, arguments_for(emulator, tmp_path), tmp_path / "log")
    try:
        second = tmp_path / "second"
        second.mkdir()
        result = exchange_mount(str(mountpoint), *arguments_for(emulator, second))
        assert_one_line_error(result, "already mounted")
        assert (mountpoint / "Inbox" / "Hello-a.txt").read_text() == "hello"
    finally:
        tear_down(first)


def test_sigterm_unmounts_cleanly(emulator: Emulator, tmp_path: Path, mountpoint: Path) -> None:
    mounted = start_mount(mountpoint, arguments_for(emulator, tmp_path), tmp_path / "log")
    try:
        assert mounted.stop() == 0
        assert not fuse_mounted(mountpoint)
        assert "unmounted" in mounted.log()
    finally:
        tear_down(mounted)


def test_a_dead_mount_is_cleared_on_the_next_start(
    emulator: Emulator, tmp_path: Path, mountpoint: Path
) -> None:
    crashed = start_mount(mountpoint, arguments_for(emulator, tmp_path), tmp_path / "log1")
    crashed.process.send_signal(signal.SIGKILL)
    crashed.process.wait(timeout=10)
    with pytest.raises(OSError, match="not connected"):
        os.listdir(mountpoint)

    again = start_mount(mountpoint, arguments_for(emulator, tmp_path), tmp_path / "log2")
    try:
        assert (mountpoint / "Inbox" / "Hello-a.txt").read_text() == "hello"
    finally:
        tear_down(again)


def test_demo_in_the_background(tmp_path: Path, mountpoint: Path) -> None:
    log_file = tmp_path / "demo.log"
    result = exchange_mount(
        "--demo", "--background", "--log-file", str(log_file),
        "--cache-dir", str(tmp_path / "cache"), str(mountpoint),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + log_file.read_text()
    assert "mounted at" in result.stdout
    try:
        inbox = os.listdir(mountpoint / "Inbox")
        assert any(name.endswith(".pdf") for name in inbox)
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
    # The daemon and its emulator go away with the mount.
    deadline = time.monotonic() + 15
    while "unmounted" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "unmounted" in log_file.read_text()

"""Fixtures for tests that mount a real filesystem over a real emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mount import MountProcess, emulator_arguments, start_mount, tear_down

MountFactory = Callable[..., MountProcess]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[MountFactory]:
    """mount(emulator, mailbox, *options) -> a live mount at a fresh mountpoint."""
    started: list[MountProcess] = []

    def start(emulator: Any, mailbox: str, *options: str) -> MountProcess:
        number = len(started)
        mountpoint = tmp_path / f"mnt{number}"
        mountpoint.mkdir()
        arguments = emulator_arguments(emulator, mailbox, tmp_path / f"secret{number}")
        arguments += ["--cache-dir", str(tmp_path / f"cache{number}"), *options]
        mounted = start_mount(mountpoint, arguments, tmp_path / f"mount{number}.log")
        started.append(mounted)
        return mounted

    yield start
    for mounted in started:
        tear_down(mounted)

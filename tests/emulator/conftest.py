"""Emulator processes shared by the tests of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.emulator import Emulator, running_emulator

DEMO = "demo@example.com"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The demo mailbox, served fresh for each test module."""
    with running_emulator(tmp_path_factory.mktemp("demo"), "--demo") as emulator:
        yield emulator


@pytest.fixture
def fresh_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The demo mailbox for a test that changes it."""
    with running_emulator(tmp_path_factory.mktemp("demo"), "--demo") as emulator:
        yield emulator

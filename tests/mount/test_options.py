"""Options that change what a mount shows, each tried on a real mount."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.conftest import MountFactory
from tests.support.emulator import Emulator, running_emulator

SALES = "sales@example.com"
SHARED = "shared.invoices@example.com"


def description(subject: str, *names: str, hidden: bool = False) -> dict[str, object]:
    return {
        "folders": [
            {
                "well_known": "inbox",
                "messages": [
                    {
                        "subject": subject,
                        "received": "2024-06-01T12:00:00Z",
                        "sender": {"name": "Billing", "address": "billing@supplier.example"},
                        "internet_message_id": "<abc@supplier.example>",
                        "attachments": [{"name": name, "content": name} for name in names],
                    }
                ],
                "folders": [{"name": "Spam"}, {"name": "Archive", "folders": [{"name": "2023"}]}],
            },
            {"name": "Secret stash", "hidden": hidden},
        ]
    }


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state = tmp_path_factory.mktemp("emulator")
    (state / "sales.json").write_text(
        json.dumps(description("Order 5", "order.pdf", "terms.txt", hidden=True))
    )
    (state / "shared.json").write_text(json.dumps(description("Invoice 9", "invoice.pdf")))
    with running_emulator(
        state,
        f"--mailbox={SALES}={state / 'sales.json'}",
        f"--mailbox={SHARED}={state / 'shared.json'}",
    ) as running:
        yield running


def getfattr(path: Path) -> dict[str, str]:
    output = subprocess.run(
        ["getfattr", "-d", "--absolute-names", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    values = {}
    for line in output.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            values[key] = value.strip('"')
    return values


def test_extended_attributes_describe_files_and_the_mount(
    emulator: Emulator, mount: MountFactory
) -> None:
    # Off by default: the kernel learns there are none, and ls -l stays cheap.
    plain = mount(emulator, SALES).mountpoint
    result = subprocess.run(
        ["getfattr", "-d", str(plain / "Inbox" / "Order 5-order.pdf")],
        capture_output=True,
        text=True,
    )
    assert "Operation not supported" in result.stderr

    root = mount(emulator, SALES, "--xattrs").mountpoint
    attributes = getfattr(root / "Inbox" / "Order 5-order.pdf")
    assert attributes["user.exchange.subject"] == "Order 5"
    assert "billing@supplier.example" in attributes["user.exchange.sender"]
    assert attributes["user.exchange.received"].startswith("2024-06-01T12:00:00")
    assert attributes["user.exchange.message_id"] == "<abc@supplier.example>"
    assert attributes["user.exchange.attachment_name"] == "order.pdf"
    assert attributes["user.exchange.web_link"].startswith("https://")

    (root / "Inbox" / "Order 5-order.pdf").read_bytes()
    status = getfattr(root)
    assert status["user.exchange.mailboxes"] == SALES
    assert int(status["user.exchange.graph_requests"]) > 0
    assert int(status["user.exchange.cache_used_bytes"]) >= len("order.pdf")
    missing = subprocess.run(
        ["getfattr", "-n", "user.exchange.nothing", str(root)], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "No such attribute" in missing.stderr


def test_several_mailboxes_get_a_directory_each(emulator: Emulator, mount: MountFactory) -> None:
    root = mount(emulator, SALES, "--mailbox", SHARED).mountpoint
    assert sorted(os.listdir(root)) == [SALES, SHARED]
    assert (root / SHARED / "Inbox" / "Invoice 9-invoice.pdf").read_text() == "invoice.pdf"
    assert (root / SALES / "Inbox" / "Order 5-terms.txt").read_text() == "terms.txt"


def test_owner_group_and_mode_options(emulator: Emulator, mount: MountFactory) -> None:
    root = mount(emulator, SALES, "--uid", "1234", "--gid", "4321", "--umask", "027").mountpoint
    file_status = os.stat(root / "Inbox" / "Order 5-order.pdf")
    assert (file_status.st_uid, file_status.st_gid) == (1234, 4321)
    assert stat.S_IMODE(file_status.st_mode) == 0o440
    assert stat.S_IMODE(os.stat(root / "Inbox").st_mode) == 0o750


def test_hidden_folders_excluded_folders_and_filters(
    emulator: Emulator, mount: MountFactory
) -> None:
    plain = mount(emulator, SALES).mountpoint
    assert "Secret stash" not in os.listdir(plain)

    root = mount(
        emulator, SALES, "--hidden-folders", "--exclude-folder", "Inbox/Archive",
        "--include", "*.pdf", "--include", "*.txt", "--exclude", "*terms*",
    ).mountpoint  # fmt: skip
    assert "Secret stash" in os.listdir(root)
    assert sorted(os.listdir(root / "Inbox")) == ["Order 5-order.pdf", "Spam"]


def test_name_template(emulator: Emulator, mount: MountFactory) -> None:
    root = mount(
        emulator, SALES, "--name-template", "{received:%Y-%m-%d} {subject} - {attachment}"
    ).mountpoint
    assert sorted(os.listdir(root / "Inbox"))[:2] == [
        "2024-06-01 Order 5 - order.pdf",
        "2024-06-01 Order 5 - terms.txt",
    ]

"""Changes both ways: rm deletes safely, and mailbox changes reach ls within a poll."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.mount.conftest import MountFactory
from tests.support.emulator import Emulator, enc, running_emulator

POLL = "1"  # seconds between polls in these tests


def mime(subject: str, *attachments: tuple[str, bytes]) -> bytes:
    message = EmailMessage()
    message["From"] = "scanner@example.com"
    message["To"] = "ops@example.com"
    message["Subject"] = subject
    message.set_content("See attached.")
    for name, content in attachments:
        message.add_attachment(
            content, maintype="application", subtype="octet-stream", filename=name
        )
    return bytes(message)


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """A fresh mailbox per test: these tests change it."""
    state = tmp_path / "emulator"
    state.mkdir()
    description = state / "ops.json"
    description.write_text(
        json.dumps(
            {
                "folders": [
                    {
                        "well_known": "inbox",
                        "messages": [
                            {
                                "subject": "Two",
                                "received": "2024-03-01T10:00:00Z",
                                "attachments": [
                                    {"name": "a.pdf", "content": "A"},
                                    {"name": "b.pdf", "content": "B"},
                                ],
                            },
                            {
                                "subject": "Logo",
                                "received": "2024-03-02T10:00:00Z",
                                "attachments": [
                                    {"name": "c.pdf", "content": "C"},
                                    {"name": "logo.png", "content": "L", "is_inline": True},
                                ],
                            },
                        ],
                    },
                    {"name": "Processed"},
                ]
            }
        )
    )
    with running_emulator(state, f"--mailbox=ops@example.com={description}") as running:
        yield running


def subjects(emulator: Emulator, folder: str = "inbox") -> list[str]:
    return sorted(m["subject"] for m in emulator.list_messages("ops@example.com", folder))


def delete_requests(emulator: Emulator) -> int:
    requests: dict[str, dict[str, int]] = emulator.stats()["requests"]
    return sum(
        count
        for route, statuses in requests.items()
        if route.startswith("DELETE")
        for count in statuses.values()
    )


def test_rm_deletes_one_attachment_and_the_message_only_when_none_is_left(
    emulator: Emulator, mount: MountFactory
) -> None:
    inbox = mount(emulator, "ops@example.com").mountpoint / "Inbox"

    os.remove(inbox / "Two-a.pdf")
    assert sorted(os.listdir(inbox)) == ["Logo-c.pdf", "Two-b.pdf"]
    assert subjects(emulator) == ["Logo", "Two"]

    os.remove(inbox / "Two-b.pdf")
    assert subjects(emulator) == ["Logo"]

    # The inline logo is not listed, so removing c.pdf empties the message as the mount sees it.
    subprocess.run(["rm", str(inbox / "Logo-c.pdf")], check=True)
    assert subjects(emulator) == []
    assert os.listdir(inbox) == []


def test_emptied_messages_can_be_moved_or_kept(emulator: Emulator, mount: MountFactory) -> None:
    moved = mount(emulator, "ops@example.com", "--on-empty-message", "move:Processed")
    subprocess.run(["rm", str(moved.mountpoint / "Inbox" / "Logo-c.pdf")], check=True)
    assert subjects(emulator) == ["Two"]
    assert subjects(emulator, emulator_folder_id(emulator, "Processed")) == ["Logo"]

    kept = mount(emulator, "ops@example.com", "--on-empty-message", "keep")
    subprocess.run(["rm", str(kept.mountpoint / "Inbox" / "Two-a.pdf")], check=True)
    subprocess.run(["rm", str(kept.mountpoint / "Inbox" / "Two-b.pdf")], check=True)
    assert subjects(emulator) == ["Two"]


def emulator_folder_id(emulator: Emulator, name: str) -> str:
    (folder,) = [f for f in emulator.list_folders("ops@example.com") if f["displayName"] == name]
    return str(folder["id"])


def test_read_only_mount_refuses_rm_and_sends_nothing(
    emulator: Emulator, mount: MountFactory
) -> None:
    inbox = mount(emulator, "ops@example.com", "--read-only").mountpoint / "Inbox"
    before = delete_requests(emulator)

    result = subprocess.run(["rm", str(inbox / "Two-a.pdf")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert delete_requests(emulator) == before
    assert (inbox / "Two-a.pdf").read_bytes() == b"A"


def test_find_delete_empties_a_folder(emulator: Emulator, mount: MountFactory) -> None:
    inbox = mount(emulator, "ops@example.com").mountpoint / "Inbox"
    subprocess.run(["find", str(inbox), "-type", "f", "-delete"], check=True)
    assert os.listdir(inbox) == []
    assert subjects(emulator) == []


def test_an_attachment_already_gone_on_the_server_is_removed_quietly(
    emulator: Emulator, mount: MountFactory
) -> None:
    inbox = mount(emulator, "ops@example.com").mountpoint / "Inbox"
    assert "Two-a.pdf" in os.listdir(inbox)
    (two,) = [
        m for m in emulator.list_messages("ops@example.com", "inbox") if m["subject"] == "Two"
    ]
    emulator.delete_message("ops@example.com", two["id"])

    subprocess.run(["rm", str(inbox / "Two-a.pdf")], check=True)
    assert "Two-a.pdf" not in os.listdir(inbox)


def test_new_mail_and_folder_changes_show_within_a_poll(
    emulator: Emulator, mount: MountFactory
) -> None:
    root = mount(emulator, "ops@example.com", "--poll-interval", POLL).mountpoint
    inbox = root / "Inbox"
    assert sorted(os.listdir(inbox)) == ["Logo-c.pdf", "Two-a.pdf", "Two-b.pdf"]
    a_inode = os.stat(inbox / "Two-a.pdf").st_ino

    emulator.add_message("ops@example.com", "inbox", mime("Scan", ("page.pdf", b"%PDF new")))
    wait_until(lambda: "Scan-page.pdf" in os.listdir(inbox))
    assert (inbox / "Scan-page.pdf").read_bytes() == b"%PDF new"

    (two,) = [
        m for m in emulator.list_messages("ops@example.com", "inbox") if m["subject"] == "Two"
    ]
    b_attachment = next(a for a in two["attachments"] if a["name"] == "b.pdf")
    with emulator.client() as client:
        url = f"/users/ops%40example.com/messages/{enc(two['id'])}/attachments/"
        client.delete(url + enc(b_attachment["id"])).raise_for_status()
    wait_until(lambda: "Two-b.pdf" not in os.listdir(inbox))
    wait_until(lambda: not (inbox / "Two-b.pdf").exists(), timeout=5)
    # Unchanged attachments keep their inode across polls.
    assert os.stat(inbox / "Two-a.pdf").st_ino == a_inode

    folder_id = emulator.create_folder("ops@example.com", "inbox", "Receipts")
    wait_until(lambda: (inbox / "Receipts").is_dir())
    emulator.rename_folder("ops@example.com", folder_id, "Receipts 2024")
    wait_until(lambda: (inbox / "Receipts 2024").is_dir() and not (inbox / "Receipts").exists())
    emulator.delete_folder("ops@example.com", folder_id)
    wait_until(lambda: not (inbox / "Receipts 2024").exists())


def test_an_idle_poll_costs_about_one_request_per_watched_folder(
    emulator: Emulator, mount: MountFactory
) -> None:
    mounted = mount(emulator, "ops@example.com", "--poll-interval", POLL)
    os.listdir(mounted.mountpoint / "Inbox")
    os.listdir(mounted.mountpoint / "Processed")
    time.sleep(3)  # let the first delta rounds complete
    before = emulator.stats()["http_requests"]
    time.sleep(5)
    per_poll = (emulator.stats()["http_requests"] - before) / 5
    # The folder delta and one message delta per watched folder, all in one JSON batch.
    assert per_poll <= 1, emulator.stats()["requests"]


def test_rsync_remove_source_files_moves_every_attachment_once_while_mail_arrives(
    emulator: Emulator, mount: MountFactory, tmp_path: Path
) -> None:
    inbox = mount(emulator, "ops@example.com", "--poll-interval", POLL).mountpoint / "Inbox"
    target = tmp_path / "incoming"
    target.mkdir()
    sent: dict[str, bytes] = {}
    stop = threading.Event()

    def deliver() -> None:
        number = 0
        while not stop.is_set() and number < 12:
            content = f"scan {number} ".encode() * 100
            sent[f"Batch {number:02}-scan.pdf"] = content
            emulator.add_message(
                "ops@example.com", "inbox", mime(f"Batch {number:02}", ("scan.pdf", content))
            )
            number += 1
            time.sleep(0.4)

    delivery = threading.Thread(target=deliver)
    delivery.start()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            subprocess.run(
                ["rsync", "-a", "--remove-source-files", f"{inbox}/", f"{target}/"], check=True
            )
            if not delivery.is_alive() and len(os.listdir(target)) == len(sent) + 3:
                break
            time.sleep(0.5)
    finally:
        stop.set()
        delivery.join()

    received = {path.name: path.read_bytes() for path in target.iterdir()}
    for name, content in sent.items():
        assert hashlib.sha256(received[name]).digest() == hashlib.sha256(content).digest()
    assert sorted(received) == sorted([*sent, "Two-a.pdf", "Two-b.pdf", "Logo-c.pdf"])
    assert subjects(emulator) == []


def test_rm_during_an_outage_fails_with_eagain_and_keeps_everything(
    emulator: Emulator, mount: MountFactory
) -> None:
    inbox = (
        mount(emulator, "ops@example.com", "--retry-attempts", "2", "--retry-time", "2").mountpoint
        / "Inbox"
    )
    assert "Two-a.pdf" in os.listdir(inbox)
    emulator.set_faults(error_rates={"503": 1.0})
    try:
        result = subprocess.run(["rm", str(inbox / "Two-a.pdf")], capture_output=True, text=True)
    finally:
        emulator.reset_faults()
    assert result.returncode != 0
    assert "Resource temporarily unavailable" in result.stderr
    assert "Two-a.pdf" in os.listdir(inbox)
    assert subjects(emulator) == ["Logo", "Two"]
    assert (inbox / "Two-a.pdf").read_bytes() == b"A"


def test_without_write_permission_rm_is_denied_and_the_log_said_so(
    tmp_path: Path, mount: MountFactory
) -> None:
    description = tmp_path / "ops.json"
    description.write_text(
        json.dumps({"messages": [{"subject": "R", "attachments": [{"name": "r.pdf"}]}]})
    )
    with running_emulator(
        tmp_path / "emulator", f"--mailbox=ops@example.com={description}", "--app-roles=Mail.Read"
    ) as emulator:
        mounted = mount(emulator, "ops@example.com")
        result = subprocess.run(
            ["rm", str(mounted.mountpoint / "Inbox" / "R-r.pdf")], capture_output=True, text=True
        )
        assert "Permission denied" in result.stderr
        assert subjects(emulator) == ["R"]
        assert "no Mail.ReadWrite permission, so rm will fail" in mounted.log()

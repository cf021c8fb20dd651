"""Reading a mailbox through a real mount with the tools users run: ls, stat, cp, rsync."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.mount.conftest import MountFactory
from tests.mount.truth import attachment_digests, sha256sum_tree
from tests.support.emulator import Emulator, running_emulator

MAILBOX = "finance@example.com"
LONG_SUBJECT = "Weekly status of the migration programme " * 6


def file_attachment(name: str | None, content: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "file", "name": name, "content": content, **extra}


def message(subject: str | None, received: str, *attachments: dict[str, Any]) -> dict[str, Any]:
    return {
        "subject": subject,
        "received": received,
        "sender": "billing@supplier.example",
        "attachments": list(attachments),
    }


MAILBOX_DESCRIPTION = {
    "folders": [
        {
            "well_known": "inbox",
            "messages": [
                message(
                    "Quarterly figures",
                    "2024-04-02T08:30:00Z",
                    file_attachment("figures.csv", "region,total\nnorth,10\nsouth,12\n"),
                    {"kind": "file", "name": "report.pdf", "size": "300k", "seed": 11},
                    file_attachment(
                        "logo.png", "not really a png", is_inline=True, content_id="logo@x"
                    ),
                ),
                message(None, "2024-04-03T09:00:00Z", file_attachment("scan.pdf", "%PDF-1.4 a")),
                message(
                    "Daily report",
                    "2024-04-04T06:00:00Z",
                    file_attachment("ATT00001.bin", "first day"),
                ),
                message(
                    "Daily report",
                    "2024-04-05T06:00:00Z",
                    file_attachment("ATT00001.bin", "second day"),
                ),
                message(
                    "RE: abc/cdf", "2024-04-06T10:00:00Z", file_attachment("minutes.docx", "m")
                ),
                message(
                    "Order 12345",
                    "2024-04-07T10:00:00Z",
                    file_attachment("invoice_12345/17.pdf", "slash"),
                    file_attachment("Invoice: copy.pdf", "colon"),
                    file_attachment("bill\u202egpj.exe", "bidi"),
                ),
                message(
                    LONG_SUBJECT,
                    "2024-04-08T10:00:00Z",
                    file_attachment("Programme_Status_Report_" + "x" * 60 + ".pdf", "long"),
                ),
                message(
                    "FW: escalation",
                    "2024-04-09T10:00:00Z",
                    {"kind": "item", "name": None, "item": {"type": "message", "subject": "Hi"}},
                    {
                        "kind": "item",
                        "name": "Team meeting",
                        "item": {
                            "type": "event",
                            "subject": "Team meeting",
                            "start": "2024-04-10T09:00:00Z",
                            "end": "2024-04-10T10:00:00Z",
                        },
                    },
                    {
                        "kind": "reference",
                        "name": "Plan.xlsx",
                        "url": "https://contoso.example/sites/plan.xlsx",
                    },
                ),
                message("Plan", "2024-04-10T10:00:00Z", file_attachment("notes.txt", "n")),
            ],
            "folders": [
                {"name": "Plan-notes.txt"},
                {
                    "name": "Invoices",
                    "folders": [
                        {
                            "name": "2024",
                            "messages": [
                                message(
                                    "Invoice 7",
                                    "2024-01-15T12:00:00Z",
                                    file_attachment("7.pdf", "%PDF-1.4 seven"),
                                )
                            ],
                        }
                    ],
                },
            ],
        },
        {
            "name": "Bulk",
            "messages": [
                message(
                    f"Scan {number:03}",
                    f"2024-02-01T{number // 60:02}:{number % 60:02}:00Z",
                    {"kind": "file", "name": "page.pdf", "size": f"{number + 1}k", "seed": number},
                )
                for number in range(45)
            ],
        },
        {"name": "Projects", "folders": [{"name": f"Project {n:02}"} for n in range(23)]},
    ]
}

EXPECTED_INBOX = {
    "Quarterly figures-figures.csv",
    "Quarterly figures-report.pdf",
    "scan.pdf",
    "Daily report-ATT00001.bin",
    "Daily report-ATT00001 (2).bin",
    "RE- abc-cdf-minutes.docx",
    "Order 12345-invoice_12345-17.pdf",
    "Order 12345-Invoice- copy.pdf",
    "Order 12345-bill-gpj.exe",
    "FW- escalation-attachment.eml",
    "FW- escalation-Team meeting.ics",
    "FW- escalation-Plan.xlsx.url",
    "Plan-notes (2).txt",
    "Plan-notes.txt",
    "Invoices",
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state = tmp_path_factory.mktemp("emulator")
    description = state / "finance.json"
    description.write_text(json.dumps(MAILBOX_DESCRIPTION))
    with running_emulator(state, f"--mailbox={MAILBOX}={description}") as running:
        yield running


def run(*command: str, cwd: Path | None = None) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, cwd=cwd).stdout


def test_ls_shows_every_attachment_under_its_safe_name(
    emulator: Emulator, mount: MountFactory
) -> None:
    mounted = mount(emulator, MAILBOX)
    inbox = mounted.mountpoint / "Inbox"

    names = set(run("ls", "-1", "-A", str(inbox)).splitlines())
    long_names = {name for name in names if name.startswith(LONG_SUBJECT[:40])}
    assert names - long_names == EXPECTED_INBOX
    (long_name,) = long_names
    assert len(long_name) == 240 and long_name.endswith(".pdf")

    # Folders: nested, more than a page of subfolders, and a page-crossing message folder.
    assert run("ls", str(inbox / "Invoices" / "2024")).split("\n")[0] == "Invoice 7-7.pdf"
    assert len(os.listdir(mounted.mountpoint / "Projects")) == 23
    assert len(os.listdir(mounted.mountpoint / "Bulk")) == 45
    found = run("find", str(mounted.mountpoint), "-type", "f").splitlines()
    # Inbox: its entries less two folders, plus the long name; Invoices/2024; Bulk.
    assert len(found) == (len(EXPECTED_INBOX) - 2 + 1) + 1 + 45


def test_stat_gives_exact_sizes_and_received_times_from_the_first_call(
    emulator: Emulator, mount: MountFactory
) -> None:
    mounted = mount(emulator, MAILBOX)
    inbox = mounted.mountpoint / "Inbox"

    for name in sorted(os.listdir(inbox)):
        path = inbox / name
        status = os.stat(path)  # before any read
        if path.is_dir():
            continue
        content = path.read_bytes()
        assert status.st_size == len(content), name
        assert status.st_blocks == -(-len(content) // 512), name
        assert status.st_mode & 0o777 == 0o444
        assert status.st_uid == os.getuid()

    figures = os.stat(inbox / "Quarterly figures-figures.csv")
    assert figures.st_mtime == datetime(2024, 4, 2, 8, 30, tzinfo=UTC).timestamp()
    assert os.stat(inbox / "Quarterly figures-report.pdf").st_size == 300 * 1024
    shortcut = (inbox / "FW- escalation-Plan.xlsx.url").read_text()
    assert "URL=https://contoso.example/sites/plan.xlsx" in shortcut


def test_cp_and_sha256sum_match_graph_byte_for_byte(
    emulator: Emulator, mount: MountFactory, tmp_path: Path
) -> None:
    mounted = mount(emulator, MAILBOX)
    copy = tmp_path / "copy"
    run("cp", "-r", str(mounted.mountpoint), str(copy))

    truth = attachment_digests(emulator, MAILBOX)
    for folder, expected in truth.items():
        copied = sha256sum_tree(copy / folder)
        shortcuts = Counter(
            digest
            for digest, path in _digests_by_path(copy / folder).items()
            if path.endswith(".url")
        )
        assert copied - shortcuts == expected, folder


def _digests_by_path(directory: Path) -> dict[str, str]:
    import hashlib

    return {
        hashlib.sha256(path.read_bytes()).hexdigest(): path.name
        for path in directory.iterdir()
        if path.is_file()
    }


def test_second_rsync_transfers_nothing(
    emulator: Emulator, mount: MountFactory, tmp_path: Path
) -> None:
    mounted = mount(emulator, MAILBOX)
    target = tmp_path / "backup"
    source = f"{mounted.mountpoint}/"

    first = run("rsync", "-a", "--stats", source, f"{target}/")
    assert "Number of regular files transferred: 60" in first
    second = run("rsync", "-a", "--stats", "--itemize-changes", source, f"{target}/")
    assert "Number of regular files transferred: 0" in second
    assert run("diff", "-r", str(mounted.mountpoint), str(target)) == ""


def test_inline_attachments_appear_with_the_option(
    emulator: Emulator, mount: MountFactory
) -> None:
    mounted = mount(emulator, MAILBOX, "--inline")
    logo = mounted.mountpoint / "Inbox" / "Quarterly figures-logo.png"
    assert logo.read_bytes() == b"not really a png"


def test_changes_are_refused_with_a_clear_errno(emulator: Emulator, mount: MountFactory) -> None:
    mounted = mount(emulator, MAILBOX)
    inbox = mounted.mountpoint / "Inbox"
    target = inbox / "scan.pdf"

    for command in (
        ["touch", str(inbox / "new.txt")],
        ["mkdir", str(inbox / "New folder")],
        ["mv", str(target), str(inbox / "renamed.pdf")],
        ["rmdir", str(inbox / "Invoices")],
        ["sh", "-c", f"echo x >> '{target}'"],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode != 0, command
        assert "Operation not permitted" in result.stderr, (command, result.stderr)
    assert target.read_bytes() == b"%PDF-1.4 a"


def test_df_reports_the_cache(emulator: Emulator, mount: MountFactory) -> None:
    mounted = mount(emulator, MAILBOX, "--cache-max-size", "100M")
    output = run("df", "--output=size", "-B1M", str(mounted.mountpoint))
    assert output.split() == ["1M-blocks", "100"]


def test_a_cold_copy_reads_ahead_and_downloads_each_attachment_once(
    emulator: Emulator, mount: MountFactory, tmp_path: Path
) -> None:
    mounted = mount(emulator, MAILBOX)
    bulk = mounted.mountpoint / "Bulk"
    names = os.listdir(bulk)
    emulator.set_faults(latency_ms=30)
    emulator.reset_stats()
    try:
        run("cp", "-r", str(bulk), str(tmp_path / "bulk"))
    finally:
        emulator.reset_faults()
    stats = emulator.stats()

    delivered = sum(path.stat().st_size for path in (tmp_path / "bulk").iterdir())
    route = "GET /users/{mailbox}/messages/{message}/attachments/{attachment}/$value"
    downloads = stats["requests"].get(route, {}).get("200", 0)
    # cp reads one file at a time; downloads ahead of it fill Graph's four request slots.
    assert stats["peak_in_flight"] >= 3, stats
    assert downloads == len(names), stats["requests"]
    assert delivered == sum(os.stat(bulk / name).st_size for name in names)

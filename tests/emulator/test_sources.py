"""Mailboxes from a directory of .eml files and from a JSON or TOML description."""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage
from pathlib import Path

from tests.support.emulator import Emulator, enc, running_emulator

ADDRESS = "files@example.com"
SELECT = "subject,receivedDateTime,hasAttachments"


def _mail(subject: str, date: str, attachments: list[tuple[str, bytes, str]]) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Sender <sender@example.net>"
    mail["To"] = ADDRESS
    mail["Subject"] = subject
    mail["Date"] = date
    mail.set_content("Body text.")
    for name, data, content_type in attachments:
        maintype, subtype = content_type.split("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return mail.as_bytes()


def _value(emulator: Emulator, message: dict, attachment: dict) -> bytes:
    with emulator.client() as client:
        url = (
            f"/users/{ADDRESS}/messages/{enc(message['id'])}"
            f"/attachments/{enc(attachment['id'])}/$value"
        )
        response = client.get(url)
    assert response.status_code == 200
    return response.content


def test_directory_tree_becomes_folders(tmp_path: Path) -> None:
    source = tmp_path / "mail"
    (source / "Inbox" / "Invoices" / "2024").mkdir(parents=True)
    (source / "Reports").mkdir()
    (source / "top.eml").write_bytes(
        _mail("At the top", "Mon, 01 Apr 2024 10:00:00 +0000", [("a.txt", b"A", "text/plain")])
    )
    (source / "Inbox" / "Invoices" / "2024" / "inv.eml").write_bytes(
        _mail(
            "Invoice März",
            "Tue, 02 Apr 2024 09:30:00 +0200",
            [("Rechnung März.pdf", b"%PDF-1.4 test", "application/pdf")],
        )
    )
    (source / "Reports" / "r.eml").write_bytes(
        _mail("Report", "Wed, 03 Apr 2024 08:00:00 +0000", [("r.csv", b"a,b\n1,2\n", "text/csv")])
    )

    with running_emulator(tmp_path / "state", "--mailbox", f"{ADDRESS}={source}") as emulator:
        folders = {f["displayName"]: f for f in emulator.list_folders(ADDRESS)}
        inbox = emulator.list_messages(ADDRESS, "inbox", SELECT)
        year = emulator.list_messages(ADDRESS, folders["2024"]["id"], SELECT)
        content = _value(emulator, year[0], year[0]["attachments"][0])

    assert folders["2024"]["parentFolderId"] == folders["Invoices"]["id"]
    assert folders["Invoices"]["parentFolderId"] == folders["Inbox"]["id"]
    assert folders["Reports"]["totalItemCount"] == 1
    assert [m["subject"] for m in inbox] == ["At the top"]
    assert year[0]["subject"] == "Invoice März"
    assert year[0]["receivedDateTime"] == "2024-04-02T07:30:00Z"
    assert year[0]["attachments"][0]["name"] == "Rechnung März.pdf"
    assert content == b"%PDF-1.4 test"


DESCRIPTION = {
    "folders": [
        {
            "well_known": "inbox",
            "messages": [
                {
                    "subject": None,
                    "received": "2024-05-01T12:00:00Z",
                    "sender": "Ann <ann@example.net>",
                    "internet_message_id": "<one@example.net>",
                    "attachments": [
                        {"name": "a/b:c.txt", "content": "slash and colon"},
                        {"name": None, "content_base64": base64.b64encode(b"\x00\x01").decode()},
                        {"name": "x" * 300 + ".pdf", "size": 5000, "seed": 3},
                        {
                            "name": "ctl\u0001\u202e.txt",
                            "content": "",
                            "is_inline": True,
                            "content_id": "cid1",
                        },
                    ],
                },
                {
                    "subject": "",
                    "received": "2024-05-02T12:00:00Z",
                    "attachments": [
                        {
                            "kind": "item",
                            "name": None,
                            "item": {"type": "message", "subject": "Inner"},
                        },
                        {"kind": "reference", "name": "link", "url": "https://example.net/f"},
                    ],
                },
            ],
        },
        {"name": "Hidden one", "hidden": True},
        {"name": "Parent", "folders": [{"name": "Child"}]},
    ]
}


def test_description_file_gives_exact_names(tmp_path: Path) -> None:
    path = tmp_path / "mailbox.json"
    path.write_text(json.dumps(DESCRIPTION))

    with running_emulator(tmp_path / "state", "--mailbox", f"{ADDRESS}={path}") as emulator:
        messages = emulator.list_messages(ADDRESS, "inbox", SELECT)
        visible = {f["displayName"] for f in emulator.list_folders(ADDRESS)}
        hidden = {f["displayName"] for f in emulator.list_folders(ADDRESS, hidden=True)}
        first = next(m for m in messages if m["subject"] is None)
        contents = [_value(emulator, first, a) for a in first["attachments"]]

    assert [m["subject"] for m in messages] == ["", None]
    assert [a["name"] for a in first["attachments"]] == [
        "a/b:c.txt",
        None,
        "x" * 300 + ".pdf",
        "ctl\u0001\u202e.txt",
    ]
    assert first["attachments"][3]["isInline"] is True
    assert contents[0] == b"slash and colon"
    assert contents[1] == b"\x00\x01"
    assert len(contents[2]) == 5000
    assert first["attachments"][2]["size"] > 5000
    second = next(m for m in messages if m["subject"] == "")
    kinds = [a["@odata.type"] for a in second["attachments"]]
    assert kinds == ["#microsoft.graph.itemAttachment", "#microsoft.graph.referenceAttachment"]
    assert "Hidden one" not in visible and "Hidden one" in hidden
    assert {"Parent", "Child"} <= visible


def test_toml_description_and_generated_content_are_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "mailbox.toml"
    path.write_text(
        """
[[folders]]
well_known = "inbox"

[[folders.messages]]
subject = "Sized"
received = 2024-06-01T08:00:00Z

[[folders.messages.attachments]]
name = "blob.bin"
size = "70k"
seed = 11
"""
    )
    runs = []
    for run in range(2):
        with running_emulator(
            tmp_path / f"state{run}", "--mailbox", f"{ADDRESS}={path}"
        ) as emulator:
            message = emulator.list_messages(ADDRESS, "inbox", SELECT)[0]
            runs.append(_value(emulator, message, message["attachments"][0]))
            assert message["receivedDateTime"] == "2024-06-01T08:00:00Z"
    assert len(runs[0]) == 70 * 1024
    assert runs[0] == runs[1]


def test_search_folders_list_matching_mail(tmp_path: Path) -> None:
    description = {
        "folders": [
            {
                "well_known": "inbox",
                "messages": [
                    {"subject": "with", "attachments": [{"name": "a.txt", "content": "a"}]},
                    {"subject": "without"},
                ],
            },
            {"name": "Has files", "search_filter": "hasAttachments eq true"},
        ]
    }
    path = tmp_path / "search.json"
    path.write_text(json.dumps(description))
    with (
        running_emulator(tmp_path / "state", "--mailbox", f"{ADDRESS}={path}") as emulator,
        emulator.client() as client,
    ):
        folders = client.get(f"/users/{ADDRESS}/mailFolders").json()["value"]
        search = next(f for f in folders if f["displayName"] == "Has files")
        found = emulator.list_messages(ADDRESS, search["id"])
    assert search["@odata.type"] == "#microsoft.graph.mailSearchFolder"
    assert [m["subject"] for m in found] == ["with"]

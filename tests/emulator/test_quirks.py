"""Each Graph quirk is on by default and can be switched off."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.emulator.conftest import DEMO
from tests.support.emulator import Emulator, enc, running_emulator

USER = f"/users/{DEMO}"


def _by_subject(emulator: Emulator, subject: str) -> dict:
    with emulator.client() as client:
        messages = client.get(
            f"{USER}/mailFolders/inbox/messages",
            params={"$top": "50", "$expand": "attachments"},
        ).json()["value"]
    return next(m for m in messages if m["subject"] == subject)


def test_quirks_switched_off_at_run_time(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(
        quirks={
            "size_overhead": False,
            "inline_not_counted": False,
            "item_without_content_bytes": False,
            "item_without_content_type": False,
            "reference_value_405": False,
        }
    )
    invoice = _by_subject(fresh_demo, "Invoice INV-2024-0042")
    newsletter = _by_subject(fresh_demo, "Newsletter")
    forwarded = _by_subject(fresh_demo, "FW: Contract signed")
    shared = _by_subject(fresh_demo, "Shared: Q2 plan")
    link = shared["attachments"][0]
    with fresh_demo.client() as client:
        shortcut = client.get(
            f"{USER}/messages/{enc(shared['id'])}/attachments/{enc(link['id'])}/$value"
        )

    pdf = invoice["attachments"][0]
    assert pdf["size"] == len(base64.b64decode(pdf["contentBytes"]))
    assert newsletter["hasAttachments"] is True
    item = forwarded["attachments"][0]
    assert item["contentType"] is not None
    assert b"Subject: Contract signed" in base64.b64decode(item["contentBytes"])
    assert shortcut.status_code == 200
    assert shortcut.content.startswith(b"[InternetShortcut]")

    fresh_demo.reset_faults()
    assert _by_subject(fresh_demo, "Newsletter")["hasAttachments"] is False


def test_plain_ids_at_start(tmp_path: Path) -> None:
    with (
        running_emulator(tmp_path, "--demo", "--quirk", "special_ids=off") as emulator,
        emulator.client() as client,
    ):
        message = client.get(f"{USER}/mailFolders/inbox/messages").json()["value"][0]
        # No percent-encoding needed any more.
        fetched = client.get(f"{USER}/messages/{message['id']}")
        try:
            emulator.set_faults(quirks={"special_ids": True})
        except ValueError as error:
            refused = str(error)
    assert not {"/", "+", "="} & set(message["id"])
    assert fetched.status_code == 200
    assert "only be set at start" in refused

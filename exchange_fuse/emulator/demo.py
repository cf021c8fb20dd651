"""The built-in demo mailbox, ``demo@example.com``: small, realistic and full of edge cases.

Everything is made here in code (PDFs, a PNG logo, CSVs, an attached mail, an event, a
contact, a cloud link), so the package ships no data files. It shows what the mount does with
nested folders, an empty folder, inline images, two attachments that end up with the same
file name, non-ASCII names, a message without a subject and every kind of attachment.
"""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

from exchange_fuse.emulator.load import apply_description
from exchange_fuse.emulator.store import Mailbox, Store

DEMO_ADDRESS = "demo@example.com"


def pdf(title: str, lines: list[str]) -> bytes:
    """A valid one-page PDF showing ``title`` and ``lines`` (ASCII text)."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = [f"BT /F1 18 Tf 56 780 Td ({escape(title)}) Tj ET"]
    for number, line in enumerate(lines):
        text.append(f"BT /F1 11 Tf 56 {748 - 16 * number} Td ({escape(line)}) Tj ET")
    stream = "\n".join(text).encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def png_logo(size: int = 48) -> bytes:
    """A small valid PNG: a blue square with a white diagonal band."""
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter: none
        for x in range(size):
            band = abs(x - y) < size // 8
            rows += bytes((255, 255, 255)) if band else bytes((0, 90, 160))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pdf(name: str, title: str, *lines: str) -> dict[str, Any]:
    return {
        "name": name,
        "content_type": "application/pdf",
        "content_base64": _b64(pdf(title, list(lines))),
    }


def _csv(name: str, rows: list[str]) -> dict[str, Any]:
    return {"name": name, "content_type": "text/csv", "content": "\r\n".join(rows) + "\r\n"}


SUPPLIER = {"name": "Northwind Billing", "address": "billing@northwind.example"}
REPORTS = {"name": "Reporting Service", "address": "reports@contoso.example"}
COLLEAGUE = {"name": "Dana Fischer", "address": "dana.fischer@contoso.example"}


def description() -> dict[str, Any]:
    """The demo mailbox in the description-file format (see docs/emulator.md)."""
    logo = {
        "name": "logo.png",
        "content_type": "image/png",
        "content_base64": _b64(png_logo()),
        "is_inline": True,
        "content_id": "logo@northwind.example",
    }
    inbox_messages = [
        {
            "subject": "Invoice INV-2024-0042",
            "received": "2024-03-04T08:15:00Z",
            "sender": SUPPLIER,
            "internet_message_id": "<inv-2024-0042@northwind.example>",
            "body_type": "html",
            "body": '<p><img src="cid:logo@northwind.example"> Your invoice is attached.</p>',
            "attachments": [
                _pdf("INV-2024-0042.pdf", "Invoice INV-2024-0042", "Amount due: EUR 1,250.00"),
                logo,
            ],
        },
        {
            "subject": "Monthly report: March",
            "received": "2024-04-01T06:00:00Z",
            "sender": REPORTS,
            "body": "The March figures are attached.",
            "attachments": [
                _csv(
                    "sales-2024-03.csv",
                    ["region,units,revenue", "north,120,18000", "south,95,14250"],
                ),
                _pdf("summary.pdf", "Summary March 2024", "Units: 215", "Revenue: 32250"),
            ],
        },
        {
            "subject": "Überweisung März",
            "received": "2024-03-28T14:02:00Z",
            "sender": {"name": "Jörg Müller", "address": "joerg.mueller@bank.example"},
            "body": "Anbei die Überweisungsbestätigung.",
            "attachments": [_pdf("Überweisung März.pdf", "Transfer confirmation", "EUR 980.00")],
        },
        {
            "subject": "見積書の送付",
            "received": "2024-02-20T01:30:00Z",
            "sender": {"name": "佐藤 花子", "address": "sato@shoji.example"},
            "body": "見積書を添付いたします。",
            "attachments": [_pdf("見積書.pdf", "Quotation Q-7781", "Total: JPY 480,000")],
        },
        {
            "subject": "FW: Contract signed",
            "received": "2024-03-12T10:45:00Z",
            "sender": COLLEAGUE,
            "body": "Forwarding the signed contract.",
            "attachments": [
                {
                    "kind": "item",
                    "name": "Contract signed",
                    "item": {
                        "type": "message",
                        "subject": "Contract signed",
                        "received": "2024-03-11T16:20:00Z",
                        "sender": {"name": "Legal", "address": "legal@partner.example"},
                        "body": "Please find the countersigned contract attached.",
                        "attachments": [
                            _pdf("contract-signed.pdf", "Service contract", "Signed 2024-03-11")
                        ],
                    },
                }
            ],
        },
        {
            "subject": "Quarterly review",
            "received": "2024-03-15T09:00:00Z",
            "sender": COLLEAGUE,
            "body": "Invitation attached.",
            "attachments": [
                {
                    "kind": "item",
                    "name": "Quarterly review",
                    "item": {
                        "type": "event",
                        "subject": "Quarterly review",
                        "start": {"dateTime": "2024-04-10T13:00:00", "timeZone": "UTC"},
                        "end": {"dateTime": "2024-04-10T14:00:00", "timeZone": "UTC"},
                        "location": {"displayName": "Room 4.12"},
                    },
                },
                {
                    "kind": "item",
                    "name": "Dana Fischer",
                    "item": {
                        "type": "contact",
                        "displayName": "Dana Fischer",
                        "givenName": "Dana",
                        "surname": "Fischer",
                        "emailAddresses": [{"address": "dana.fischer@contoso.example"}],
                        "businessPhones": ["+49 30 1234567"],
                        "companyName": "Contoso",
                    },
                },
            ],
        },
        {
            "subject": "Shared: Q2 plan",
            "received": "2024-03-20T11:11:00Z",
            "sender": COLLEAGUE,
            "body": "I shared the plan with you.",
            "attachments": [
                {
                    "kind": "reference",
                    "name": "Q2 plan.xlsx",
                    "url": "https://contoso.sharepoint.example/sites/plans/Q2%20plan.xlsx",
                }
            ],
        },
        {
            "subject": "Newsletter",
            "received": "2024-03-22T07:00:00Z",
            "sender": SUPPLIER,
            "body_type": "html",
            "body": '<p><img src="cid:logo@northwind.example"> Spring news.</p>',
            "attachments": [logo],
        },
        {
            "subject": None,
            "received": "2024-03-25T17:40:00Z",
            "sender": {"name": "Scanner", "address": "scanner@contoso.example"},
            "attachments": [_pdf("scan.pdf", "Scanned document", "Page 1 of 1")],
        },
    ]
    invoice_mails = [
        {
            "subject": "Invoice",
            "received": f"2024-0{month}-01T09:00:00Z",
            "sender": SUPPLIER,
            "body": "Invoice attached.",
            "attachments": [_pdf("invoice.pdf", f"Invoice {month}/2024", f"Month {month}")],
        }
        for month in (1, 2)
    ]
    return {
        "display_name": "Demo User",
        "folders": [
            {
                "well_known": "inbox",
                "messages": inbox_messages,
                "folders": [
                    {
                        "name": "Invoices",
                        "messages": invoice_mails,
                        "folders": [
                            {
                                "name": "2024",
                                "messages": [
                                    {
                                        "subject": "Invoice 2024-001",
                                        "received": "2024-01-15T09:30:00Z",
                                        "sender": SUPPLIER,
                                        "attachments": [
                                            _pdf("2024-001.pdf", "Invoice 2024-001", "EUR 310.00")
                                        ],
                                    }
                                ],
                            },
                            {
                                "name": "2023",
                                "messages": [
                                    {
                                        "subject": "Invoice 2023-117",
                                        "received": "2023-12-18T09:30:00Z",
                                        "sender": SUPPLIER,
                                        "attachments": [
                                            _pdf("2023-117.pdf", "Invoice 2023-117", "EUR 95.00")
                                        ],
                                    }
                                ],
                            },
                        ],
                    },
                    {
                        "name": "Reports",
                        "messages": [
                            {
                                "subject": f"Daily report 2024-03-{day:02d}",
                                "received": f"2024-03-{day:02d}T05:00:00Z",
                                "sender": REPORTS,
                                "attachments": [
                                    _csv(
                                        f"daily-2024-03-{day:02d}.csv",
                                        ["hour,requests", f"00,{day * 11}", f"01,{day * 7}"],
                                    )
                                ],
                            }
                            for day in (1, 2, 3)
                        ],
                    },
                    {"name": "Empty"},
                ],
            },
            {
                "name": "Projects",
                "folders": [
                    {
                        "name": "Alpha",
                        "messages": [
                            {
                                "subject": "Alpha: kickoff notes",
                                "received": "2024-02-05T12:00:00Z",
                                "sender": COLLEAGUE,
                                "attachments": [
                                    {
                                        "name": "notes.txt",
                                        "content_type": "text/plain",
                                        "content": "Kickoff: scope agreed; review in April.\n",
                                    }
                                ],
                            }
                        ],
                    }
                ],
            },
        ],
    }


def add_demo(store: Store) -> Mailbox:
    mailbox = store.mailbox(DEMO_ADDRESS, create=True)
    apply_description(mailbox, description(), base=Path("."))
    return mailbox

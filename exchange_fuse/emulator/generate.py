"""Deterministic synthetic mailboxes for scale: ``--generate KEY=VALUE,...``.

Keys (all but ``address`` optional):

=============  ==========================================================================
address        the mailbox (several specs for one address add to the same mailbox)
folders        folders made under ``parent`` (default 1); 1500 gives >1000 subfolders
subfolders     children of every generated folder, level after level (default 0)
depth          levels of folders, counting the top level (default 1; needs subfolders)
messages       messages in every generated folder (default 10)
attachments    attachments per message, ``N`` or ``MIN-MAX`` (default 1-3)
size           attachment size, ``N`` or ``MIN-MAX`` with k/m/g suffixes (default 1k-256k);
               sizes are spread evenly on a log scale
inline         share of messages that also carry an inline logo (default 0)
items          share of attachments that are attached mails (default 0)
references     share of attachments that are cloud links (default 0)
seed           the seed everything derives from (default 1)
parent         where the folders go: a well-known name or a path (default inbox)
name           the folder name prefix (default ``Folder``)
start          received time of the oldest message, ISO 8601 (default 2024-01-01T00:00:00Z)
interval       seconds between received times (default 600)
=============  ==========================================================================

Messages are built only when a folder is first read, so 100,000 messages cost nothing until
used, and attachment bytes are generated as they are sent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exchange_fuse.emulator import mime
from exchange_fuse.emulator.content import BytesContent, GeneratedContent, derive_seed
from exchange_fuse.emulator.load import parse_size
from exchange_fuse.emulator.odata import parse_datetime
from exchange_fuse.emulator.store import Attachment, Folder, Item, Mailbox, Message, Store

_WORDS = [
    "invoice",
    "report",
    "statement",
    "order",
    "delivery",
    "contract",
    "minutes",
    "budget",
    "forecast",
    "summary",
    "schedule",
    "review",
    "proposal",
    "receipt",
    "quote",
    "notice",
]
_TYPES = (
    ("pdf", "application/pdf"),
    ("csv", "text/csv"),
    ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("zip", "application/zip"),
    ("txt", "text/plain"),
    ("png", "image/png"),
    ("xml", "application/xml"),
)
_SENDERS = (
    ("Accounts Payable", "ap@supplier.example"),
    ("Reporting Service", "reports@example.net"),
    ("Dana Fischer", "dana.fischer@partner.example"),
    ("Orders", "orders@shop.example"),
)


@dataclass(frozen=True, slots=True)
class GenerateSpec:
    address: str
    folders: int = 1
    subfolders: int = 0
    depth: int = 1
    messages: int = 10
    attachments: tuple[int, int] = (1, 3)
    size: tuple[int, int] = (1024, 256 * 1024)
    inline: float = 0.0
    items: float = 0.0
    references: float = 0.0
    seed: int = 1
    parent: str = "inbox"
    name: str = "Folder"
    start: float = 1_704_067_200.0
    interval: float = 600.0


def parse_spec(text: str) -> GenerateSpec:
    """Parse ``address=a@b,folders=3,...``; raises ValueError naming the bad key."""
    values: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if not sep or not value:
            raise ValueError(f"{part.strip()!r} is not KEY=VALUE")
        if key in ("address", "parent", "name"):
            values[key] = value
        elif key in ("folders", "subfolders", "depth", "messages", "seed"):
            values[key] = _count(key, value)
        elif key == "attachments":
            values[key] = _range(key, value, int)
        elif key == "size":
            values[key] = _range(key, value, lambda v: parse_size(v, "size"))
        elif key in ("inline", "items", "references"):
            values[key] = _share(key, value)
        elif key == "start":
            values[key] = parse_datetime(value)
        elif key == "interval":
            values[key] = float(_count(key, value))
        else:
            raise ValueError(f"unknown key {key!r}")
    if "address" not in values or "@" not in values["address"]:
        raise ValueError("address=MAILBOX is required")
    spec = GenerateSpec(**values)
    if spec.depth < 1:
        raise ValueError("depth must be at least 1")
    if spec.folders * (spec.subfolders + 1) ** (spec.depth - 1) > 200_000:
        raise ValueError("that many folders is more than the emulator will make")
    return spec


def _count(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{key} must be a whole number, not {value!r}") from None
    if number < 0:
        raise ValueError(f"{key} must not be negative")
    return number


def _range(key: str, value: str, convert: Any) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    try:
        first = convert(low)
        last = convert(high) if sep else first
    except ValueError:
        raise ValueError(f"{key} must be N or MIN-MAX, not {value!r}") from None
    if first < 0 or last < first:
        raise ValueError(f"{key} range {value!r} is empty or negative")
    return (first, last)


def _share(key: str, value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise ValueError(f"{key} must be a number between 0 and 1") from None
    if not 0 <= share <= 1:
        raise ValueError(f"{key} must be between 0 and 1")
    return share


def generate(store: Store, spec: GenerateSpec) -> Mailbox:
    """Add the folders of ``spec`` to its mailbox; messages stay pending until read."""
    mailbox = store.mailbox(spec.address, create=True)
    parent = _parent(mailbox, spec.parent)
    counter = [0]
    for number in range(1, spec.folders + 1):
        _make_folder(
            mailbox, parent, spec, f"{spec.name} {number:0{_width(spec.folders)}d}", 1, counter
        )
    return mailbox


def _width(count: int) -> int:
    return max(2, len(str(count)))


def _parent(mailbox: Mailbox, where: str) -> Folder:
    known = mailbox.well_known.get(where.lower())
    if known is not None:
        return known
    folder = mailbox.top
    for name in where.strip("/").split("/"):
        child = mailbox.child_named(folder, name)
        folder = child if child is not None else mailbox.add_folder(folder, name)
    return folder


def _make_folder(
    mailbox: Mailbox, parent: Folder, spec: GenerateSpec, name: str, level: int, counter: list[int]
) -> None:
    if mailbox.child_named(parent, name) is not None:
        name = f"{name} ({spec.seed})"
    folder = mailbox.add_folder(parent, name, stamp=False)
    counter[0] += 1
    folder_seed = derive_seed(spec.seed, counter[0])
    if spec.messages:
        mailbox.add_pending(folder, spec.messages, _builder(spec, folder_seed))
    if level < spec.depth:
        for number in range(1, spec.subfolders + 1):
            child = f"{name}.{number:0{_width(spec.subfolders)}d}"
            _make_folder(mailbox, folder, spec, child, level + 1, counter)


def _builder(spec: GenerateSpec, folder_seed: int) -> Callable[[int], Message]:
    low, high = spec.size
    log_low, log_high = math.log(max(low, 1)), math.log(max(high, 1))

    recipients = [("Mailbox", spec.address)]  # shared: never changed after creation

    def build(index: int) -> Message:
        rnd = random.Random(folder_seed * 1_000_003 + index)
        word = _WORDS[rnd.randrange(len(_WORDS))]
        sender = _SENDERS[rnd.randrange(len(_SENDERS))]
        received = spec.start + index * spec.interval + rnd.randrange(int(spec.interval) or 1)
        count = rnd.randint(*spec.attachments)
        attachments = []
        for number in range(count):
            attachments.append(_attachment(spec, rnd, word, index, number, log_low, log_high))
        if spec.inline and rnd.random() < spec.inline:
            attachments.append(
                Attachment(
                    "file",
                    "image001.png",
                    "image/png",
                    GeneratedContent(derive_seed(folder_seed, index, "logo"), 2048),
                    is_inline=True,
                    content_id=f"image001.png@{index:08X}",
                )
            )
        subject = f"{word.title()} {index + 1}"
        return Message(
            subject,
            received,
            sender=sender,
            recipients=recipients,
            internet_message_id=f"<{folder_seed:x}.{index}@generated.example>",
            body=_body,
            attachments=attachments,
        )

    return build


def _body(message: Message) -> str:
    """The text of a generated message, made from its subject when asked for."""
    sender = message.sender[0] if message.sender else "the sender"
    subject = (message.subject or "document").lower()
    return f"Please find the {subject} attached.\r\n\r\nKind regards,\r\n{sender}"


def _attachment(
    spec: GenerateSpec,
    rnd: random.Random,
    word: str,
    index: int,
    number: int,
    log_low: float,
    log_high: float,
) -> Attachment:
    draw = rnd.random()
    if draw < spec.references:
        return Attachment(
            "reference",
            f"{word}-{index + 1}-{number + 1} (link)",
            None,
            None,
            source_url=f"https://contoso.sharepoint.example/{word}/{index + 1}/{number + 1}",
        )
    if draw < spec.references + spec.items:
        inner = Message(
            f"Original {word} {index + 1}",
            spec.start + index * spec.interval,
            sender=("Forwarded", "forward@example.net"),
            body=f"The original {word}.",
        )
        fields: dict[str, object] = {"subject": inner.subject, "receivedDateTime": inner.received}
        item = Item("message", fields, BytesContent(mime.message_to_mime(inner)))
        return Attachment("item", inner.subject, None, None, item=item)
    extension, content_type = _TYPES[rnd.randrange(len(_TYPES))]
    size = int(math.exp(rnd.uniform(log_low, log_high))) if log_high > log_low else spec.size[0]
    seed = rnd.getrandbits(62)
    return Attachment(
        "file",
        f"{word}-{index + 1}-{number + 1}.{extension}",
        content_type,
        GeneratedContent(seed, size),
    )

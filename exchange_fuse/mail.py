"""What Graph tells us about mail: ids and the records the layers above work with.

The Graph client parses JSON into these records; nothing above it sees JSON. Ids are
opaque, case-sensitive strings that may contain ``/``, ``+`` and ``=``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import NewType

MailboxAddress = NewType("MailboxAddress", str)
FolderId = NewType("FolderId", str)
MessageId = NewType("MessageId", str)
AttachmentId = NewType("AttachmentId", str)


class AttachmentKind(enum.Enum):
    """The three kinds of Graph attachment, from ``@odata.type``."""

    FILE = "file"  # #microsoft.graph.fileAttachment: $value is the bytes
    ITEM = "item"  # #microsoft.graph.itemAttachment: $value is MIME, iCalendar or vCard
    REFERENCE = "reference"  # #microsoft.graph.referenceAttachment: a link, $value is 405


@dataclass(frozen=True, slots=True)
class FolderRecord:
    id: FolderId
    parent_id: FolderId | None
    display_name: str
    child_folder_count: int = 0
    total_item_count: int = 0
    is_hidden: bool = False
    is_search_folder: bool = False


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    id: AttachmentId
    name: str | None
    content_type: str | None
    # Graph's ``size`` counts metadata too: an estimate, never the content length.
    size_estimate: int
    is_inline: bool
    kind: AttachmentKind
    last_modified: datetime | None = None
    # For item attachments: "message", "event" or "contact" when known (picks .eml/.ics/.vcf).
    item_type: str | None = None
    # For reference attachments, the link the ``.url`` shortcut points at, when known.
    source_url: str | None = None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: MessageId
    folder_id: FolderId | None
    subject: str | None
    received: datetime
    sender: str | None = None
    internet_message_id: str | None = None
    web_link: str | None = None
    change_key: str | None = None
    attachments: tuple[AttachmentRecord, ...] = ()

"""The mailbox model the emulator serves: folders, messages and attachments in memory.

Every change goes through a ``Mailbox`` method, which stamps it with the mailbox's change
sequence number. Delta queries are answered from those stamps: a message carries the
sequence of its last change, and a folder keeps tombstones of the messages that left it.

Ids follow Exchange: folder ids never change; a message has an immutable id and a "REST" id
that changes with every move (its *generation*). Attachment ids are derived from the id of
their message in the same format.

Generated folders may hold tens of thousands of messages. They are *pending* until first
touched: their messages are built on demand from a reserved range of serials, so start-up
stays fast and untouched folders cost no memory.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Literal

from exchange_fuse.emulator.content import Content
from exchange_fuse.emulator.ids import IMMUTABLE, DecodedId, IdCodec

log = logging.getLogger(__name__)

AttachmentKindName = Literal["file", "item", "reference"]
ItemType = Literal["message", "event", "contact"]

# Well-known folders under "Top of Information Store": name -> display name.
DEFAULT_FOLDERS = {
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
    "archive": "Archive",
    "conversationhistory": "Conversation History",
}
# All names Graph accepts in place of a folder id; those not created answer 404.
WELL_KNOWN_NAMES = frozenset(
    {
        *DEFAULT_FOLDERS,
        "clutter",
        "conflicts",
        "localfailures",
        "msgfolderroot",
        "recoverableitemsdeletions",
        "scheduled",
        "searchfolders",
        "serverfailures",
        "syncissues",
    }
)


class Item:
    """What an item attachment carries: an attached mail, event or contact."""

    __slots__ = ("content", "fields", "type")

    def __init__(self, type: ItemType, fields: dict[str, object], content: Content) -> None:
        self.type = type
        # Graph JSON properties of the item (subject, start, emailAddresses, ...).
        self.fields = fields
        # What $value returns: MIME, iCalendar or vCard.
        self.content = content


class Attachment:
    __slots__ = (
        "content",
        "content_id",
        "content_type",
        "is_inline",
        "item",
        "kind",
        "last_modified",
        "name",
        "serial",
        "source_url",
    )

    def __init__(
        self,
        kind: AttachmentKindName,
        name: str | None,
        content_type: str | None,
        content: Content | None,
        *,
        is_inline: bool = False,
        content_id: str | None = None,
        item: Item | None = None,
        source_url: str | None = None,
        last_modified: float | None = None,
    ) -> None:
        self.serial = 0
        self.kind = kind
        self.name = name
        self.content_type = content_type
        self.content = content
        self.is_inline = is_inline
        self.content_id = content_id
        self.item = item
        self.source_url = source_url
        self.last_modified = last_modified

    @property
    def length(self) -> int:
        """The exact number of bytes ``$value`` returns (0 for reference attachments)."""
        if self.item is not None:
            return self.item.content.length
        return self.content.length if self.content is not None else 0

    def reported_size(self, overhead: bool) -> int:
        """Graph's ``size``: with the quirk on, content plus a metadata overhead."""
        if self.kind == "reference":
            return 300 + len((self.source_url or "").encode()) + len((self.name or "").encode())
        if not overhead:
            return self.length
        name_bytes = len((self.name or "").encode("utf-16-le"))
        return self.length + 180 + name_bytes + len(self.content_type or "")


class Message:
    __slots__ = (
        "attachments",
        "body",
        "body_type",
        "change_count",
        "changed_seq",
        "created",
        "folder",
        "generation",
        "internet_message_id",
        "is_draft",
        "is_read",
        "mime",
        "modified",
        "next_attachment",
        "received",
        "recipients",
        "sender",
        "sent",
        "serial",
        "subject",
    )

    def __init__(
        self,
        subject: str | None,
        received: float,
        *,
        sender: tuple[str, str] | None = None,
        recipients: list[tuple[str, str]] | None = None,
        internet_message_id: str | None = None,
        body: str | Callable[[Message], str] = "",
        body_type: str = "text",
        attachments: list[Attachment] | None = None,
        sent: float | None = None,
        is_read: bool = False,
        is_draft: bool = False,
        mime: Content | None = None,
    ) -> None:
        self.serial = 0
        self.folder: Folder | None = None
        self.generation = 0
        self.subject = subject
        self.received = received
        self.sent = sent if sent is not None else received
        self.created = received
        self.modified = received
        self.sender = sender
        self.recipients = recipients or []
        self.internet_message_id = internet_message_id
        self.body = body
        self.body_type = body_type
        self.is_read = is_read
        self.is_draft = is_draft
        # The original MIME, when the message came from MIME: served by GET .../$value.
        self.mime = mime
        self.attachments: list[Attachment] = []
        self.next_attachment = 1
        self.changed_seq = 0
        self.change_count = 0
        for attachment in attachments or ():
            self.take_attachment(attachment)

    def take_attachment(self, attachment: Attachment) -> None:
        """Add an attachment while the message is being built (no change is recorded)."""
        attachment.serial = self.next_attachment
        self.next_attachment += 1
        if attachment.last_modified is None:
            attachment.last_modified = self.received
        self.attachments.append(attachment)

    def body_text(self) -> str:
        return self.body(self) if callable(self.body) else self.body

    def has_attachments(self, inline_counts: bool) -> bool:
        """Graph's ``hasAttachments``: inline attachments do not count (quirk on)."""
        if inline_counts:
            return bool(self.attachments)
        return any(not a.is_inline for a in self.attachments)

    def attachment(self, serial: int) -> Attachment | None:
        for attachment in self.attachments:
            if attachment.serial == serial:
                return attachment
        return None


class Folder:
    __slots__ = (
        "_order_cache",
        "_pending",
        "_pending_count",
        "changed_seq",
        "children",
        "display_name",
        "id",
        "is_hidden",
        "mailbox",
        "messages_by_serial",
        "parent",
        "search_filter",
        "serial",
        "tombstones",
        "version",
        "well_known",
    )

    def __init__(
        self,
        mailbox: Mailbox,
        serial: int,
        display_name: str,
        parent: Folder | None,
        *,
        is_hidden: bool = False,
        well_known: str | None = None,
        search_filter: str | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.serial = serial
        self.id = mailbox.codec.folder(mailbox.index, serial)
        self.display_name = display_name
        self.parent = parent
        self.is_hidden = is_hidden
        self.well_known = well_known
        self.search_filter = search_filter
        self.children: list[Folder] = []
        self.messages_by_serial: dict[int, Message] = {}
        self._pending: Callable[[], list[Message]] | None = None
        self._pending_count = 0
        self.changed_seq = 0
        # Messages that left this folder: (sequence, message serial, generation it had).
        self.tombstones: list[tuple[int, int, int]] = []
        self.version = 0
        self._order_cache: dict[object, list[Message]] = {}

    @property
    def is_search_folder(self) -> bool:
        return self.search_filter is not None

    @property
    def messages(self) -> dict[int, Message]:
        if self._pending is not None:
            self.mailbox.materialise(self)
        return self.messages_by_serial

    @property
    def is_pending(self) -> bool:
        return self._pending is not None

    def total_count(self) -> int:
        if self._pending is not None:
            return self._pending_count
        return len(self.messages_by_serial)

    def unread_count(self) -> int:
        if self._pending is not None:
            return self._pending_count  # generated mail starts unread
        return sum(1 for m in self.messages_by_serial.values() if not m.is_read)

    def ordered(
        self, key: object, sort: Callable[[list[Message]], list[Message]]
    ) -> list[Message]:
        """The folder's messages sorted by ``sort``, cached until the folder changes."""
        cached = self._order_cache.get(key)
        if cached is None:
            cached = sort(list(self.messages.values()))
            self._order_cache[key] = cached
        return cached

    def touch(self, seq: int) -> None:
        self.version += 1
        self.changed_seq = seq
        self._order_cache.clear()

    def path(self) -> str:
        names: list[str] = []
        folder: Folder | None = self
        while folder is not None and folder.well_known != "msgfolderroot":
            names.append(folder.display_name)
            folder = folder.parent
        return "/".join(reversed(names))

    def descendants(self) -> Iterator[Folder]:
        for child in self.children:
            yield child
            yield from child.descendants()


class NotFound(LookupError):
    """No such folder, message or attachment (in the id format asked for)."""


class Mailbox:
    """One mailbox: its folder tree, messages and change sequence."""

    def __init__(self, address: str, index: int, codec: IdCodec, display_name: str = "") -> None:
        self.address = address
        self.index = index
        self.codec = codec
        self.display_name = display_name or address.split("@", 1)[0].title()
        self.seq = 0
        self._next_folder = 1
        self._next_message = 1
        self.folders: dict[int, Folder] = {}
        self.well_known: dict[str, Folder] = {}
        self.messages: dict[int, Message] = {}
        # Reserved serial ranges of pending folders: starts, and (end, folder) per start.
        self._pending_starts: list[int] = []
        self._pending_ranges: list[tuple[int, Folder]] = []
        self.folder_tombstones: list[tuple[int, int]] = []

        self.root = self._new_folder("Root", None, is_hidden=True)
        self.top = self._new_folder("Top of Information Store", self.root)
        self.top.well_known = "msgfolderroot"
        self.well_known["msgfolderroot"] = self.top
        for name, display in DEFAULT_FOLDERS.items():
            self.add_folder(self.top, display, well_known=name, stamp=False)
        recoverable = self._new_folder("Recoverable Items", self.root, is_hidden=True)
        deletions = self._new_folder("Deletions", recoverable, is_hidden=True)
        deletions.well_known = "recoverableitemsdeletions"
        self.well_known["recoverableitemsdeletions"] = deletions
        finder = self._new_folder("Finder", self.root, is_hidden=True)
        finder.well_known = "searchfolders"
        self.well_known["searchfolders"] = finder

    # -- lookups --------------------------------------------------------------------------

    def folder(self, key: str) -> Folder:
        """The folder named by an id or a well-known name."""
        known = self.well_known.get(key.lower())
        if known is not None:
            return known
        if key.lower() in WELL_KNOWN_NAMES:
            raise NotFound(key)
        decoded = self.codec.decode(key)
        if decoded is None or decoded.kind != "folder" or decoded.mailbox != self.index:
            raise NotFound(key)
        folder = self.folders.get(decoded.serial)
        if folder is None:
            raise NotFound(key)
        return folder

    def message(self, key: str) -> Message:
        """The message named by a REST id (current generation only) or an immutable id."""
        decoded = self.codec.decode(key)
        if decoded is None or decoded.kind != "message" or decoded.mailbox != self.index:
            raise NotFound(key)
        message = self._message_by_serial(decoded.serial)
        if message is None or not self._generation_matches(message, decoded):
            raise NotFound(key)
        return message

    def attachment(self, message: Message, key: str) -> Attachment:
        decoded = self.codec.decode(key)
        if (
            decoded is None
            or decoded.kind != "attachment"
            or decoded.mailbox != self.index
            or decoded.serial != message.serial
            or not self._generation_matches(message, decoded)
        ):
            raise NotFound(key)
        attachment = message.attachment(decoded.attachment)
        if attachment is None:
            raise NotFound(key)
        return attachment

    def _generation_matches(self, message: Message, decoded: DecodedId) -> bool:
        return decoded.generation in (IMMUTABLE, message.generation)

    def _message_by_serial(self, serial: int) -> Message | None:
        message = self.messages.get(serial)
        if message is None and self._pending_starts:
            at = bisect.bisect_right(self._pending_starts, serial) - 1
            if at >= 0:
                end, folder = self._pending_ranges[at]
                if serial < end and folder.is_pending:
                    self.materialise(folder)
                    message = self.messages.get(serial)
        return message

    def message_id(self, message: Message, immutable: bool) -> str:
        generation = IMMUTABLE if immutable else message.generation
        return self.codec.message(self.index, message.serial, generation)

    def attachment_id(self, message: Message, attachment: Attachment, immutable: bool) -> str:
        generation = IMMUTABLE if immutable else message.generation
        return self.codec.attachment(self.index, message.serial, generation, attachment.serial)

    def mail_folders(self) -> Iterator[Folder]:
        """Every folder under Top of Information Store, depth first."""
        return self.top.descendants()

    def all_messages(self) -> Iterator[Message]:
        """Every message a mailbox-wide listing shows (not Recoverable Items)."""
        for folder in self.mail_folders():
            if not folder.is_search_folder:
                yield from folder.messages.values()

    # -- building -------------------------------------------------------------------------

    def _new_folder(self, name: str, parent: Folder | None, *, is_hidden: bool = False) -> Folder:
        folder = Folder(self, self._next_folder, name, parent, is_hidden=is_hidden)
        self._next_folder += 1
        self.folders[folder.serial] = folder
        if parent is not None:
            parent.children.append(folder)
        return folder

    def add_folder(
        self,
        parent: Folder,
        name: str,
        *,
        is_hidden: bool = False,
        well_known: str | None = None,
        search_filter: str | None = None,
        stamp: bool = True,
    ) -> Folder:
        folder = self._new_folder(name, parent, is_hidden=is_hidden)
        folder.well_known = well_known
        folder.search_filter = search_filter
        if well_known:
            self.well_known[well_known] = folder
        if stamp:
            seq = self._bump()
            folder.touch(seq)
            parent.touch(seq)
        return folder

    def child_named(self, parent: Folder, name: str) -> Folder | None:
        lowered = name.lower()
        for child in parent.children:
            if child.display_name.lower() == lowered:
                return child
        return None

    def add_message(self, folder: Folder, message: Message, *, stamp: bool = True) -> Message:
        message.serial = self._next_message
        self._next_message += 1
        self._place(folder, message, stamp=stamp)
        return message

    def add_pending(self, folder: Folder, count: int, build: Callable[[int], Message]) -> None:
        """Reserve ``count`` messages for ``folder``, built by ``build(i)`` when first needed."""
        start = self._next_message
        self._next_message += count

        def materialise() -> list[Message]:
            messages = []
            for offset in range(count):
                message = build(offset)
                message.serial = start + offset
                messages.append(message)
            return messages

        folder._pending = materialise
        folder._pending_count = count
        self._pending_starts.append(start)
        self._pending_ranges.append((start + count, folder))

    def materialise(self, folder: Folder) -> None:
        pending = folder._pending
        if pending is None:
            return
        folder._pending = None
        started = time.perf_counter()
        messages = pending()
        for message in messages:
            message.folder = folder
            folder.messages_by_serial[message.serial] = message
            self.messages[message.serial] = message
        log.debug(
            "built %d messages of folder %s in %.3f s",
            len(messages),
            folder.display_name,
            time.perf_counter() - started,
        )

    def _place(self, folder: Folder, message: Message, *, stamp: bool) -> None:
        message.folder = folder
        folder.messages[message.serial] = message
        self.messages[message.serial] = message
        if stamp:
            seq = self._bump()
            message.changed_seq = seq
            folder.touch(seq)

    def _bump(self) -> int:
        self.seq += 1
        return self.seq

    # -- changes --------------------------------------------------------------------------

    def touch_message(self, message: Message) -> None:
        seq = self._bump()
        message.changed_seq = seq
        message.change_count += 1
        message.modified = max(time.time(), message.received)
        if message.folder is not None:
            message.folder.touch(seq)

    def add_attachment(self, message: Message, attachment: Attachment) -> Attachment:
        message.take_attachment(attachment)
        self.touch_message(message)
        return attachment

    def delete_attachment(self, message: Message, attachment: Attachment) -> None:
        message.attachments.remove(attachment)
        self.touch_message(message)

    def move_message(self, message: Message, destination: Folder) -> None:
        """Move, giving the message a new REST id (its immutable id stays)."""
        source = message.folder
        assert source is not None
        seq = self._bump()
        source.tombstones.append((seq, message.serial, message.generation))
        del source.messages[message.serial]
        source.touch(seq)
        message.generation = (message.generation + 1) % IMMUTABLE
        message.change_count += 1
        message.modified = max(time.time(), message.received)
        message.folder = destination
        destination.messages[message.serial] = message
        message.changed_seq = seq
        destination.touch(seq)

    def remove_message(self, message: Message) -> None:
        """Remove for good (permanent delete: Purges, which no client sees)."""
        source = message.folder
        assert source is not None
        seq = self._bump()
        source.tombstones.append((seq, message.serial, message.generation))
        del source.messages[message.serial]
        del self.messages[message.serial]
        source.touch(seq)
        message.folder = None

    def rename_folder(self, folder: Folder, name: str) -> None:
        folder.display_name = name
        folder.touch(self._bump())

    def move_folder(self, folder: Folder, destination: Folder) -> None:
        assert folder.parent is not None
        seq = self._bump()
        folder.parent.children.remove(folder)
        folder.parent.touch(seq)
        folder.parent = destination
        destination.children.append(folder)
        destination.touch(seq)
        folder.touch(seq)

    def remove_folder(self, folder: Folder) -> None:
        """Remove a folder, its subfolders and their messages for good."""
        assert folder.parent is not None
        seq = self._bump()
        folder.parent.children.remove(folder)
        folder.parent.touch(seq)
        for gone in [folder, *folder.descendants()]:
            for message in list(gone.messages.values()):
                del self.messages[message.serial]
            del self.folders[gone.serial]
            self.folder_tombstones.append((seq, gone.serial))
            if gone.well_known:
                self.well_known.pop(gone.well_known, None)

    def is_under_top(self, folder: Folder) -> bool:
        current: Folder | None = folder
        while current is not None:
            if current is self.top:
                return True
            current = current.parent
        return False


class Store:
    """All mailboxes the emulator serves, by lower-case address."""

    def __init__(self, codec: IdCodec) -> None:
        self.codec = codec
        self.mailboxes: dict[str, Mailbox] = {}

    def mailbox(self, address: str, *, create: bool = False) -> Mailbox:
        key = address.lower()
        mailbox = self.mailboxes.get(key)
        if mailbox is None:
            if not create:
                raise NotFound(address)
            mailbox = Mailbox(address, len(self.mailboxes) + 1, self.codec)
            self.mailboxes[key] = mailbox
        return mailbox

    @property
    def addresses(self) -> list[str]:
        return [mailbox.address for mailbox in self.mailboxes.values()]

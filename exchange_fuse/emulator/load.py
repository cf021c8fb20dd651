"""Filling mailboxes: from a directory of ``.eml`` files, or from a JSON/TOML description.

A directory becomes the folder tree under "Top of Information Store": each subdirectory a
folder (one named like a default folder, e.g. ``Inbox``, is that folder), each ``.eml`` file
a message; ``.eml`` files at the top go to the Inbox.

A description file states folders, messages and attachments exactly (see docs/emulator.md),
for tests that need particular names, kinds and contents.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exchange_fuse.emulator import mime
from exchange_fuse.emulator.content import BytesContent, Content, GeneratedContent, derive_seed
from exchange_fuse.emulator.odata import parse_datetime
from exchange_fuse.emulator.store import Attachment, Folder, Item, Mailbox, Message

log = logging.getLogger(__name__)

# Files larger than this are read again when served instead of being kept in memory.
KEEP_FILE_IN_MEMORY = 1024 * 1024
DEFAULT_TIME = 1_704_067_200.0  # 2024-01-01T00:00:00Z

# Description keys in Graph's camelCase, accepted as aliases of the snake_case ones.
_ALIASES = {
    "displayName": "name",
    "wellKnownName": "well_known",
    "isHidden": "hidden",
    "childFolders": "folders",
    "filterQuery": "search_filter",
    "receivedDateTime": "received",
    "sentDateTime": "sent",
    "internetMessageId": "internet_message_id",
    "from": "sender",
    "toRecipients": "to",
    "isRead": "is_read",
    "contentType": "content_type",
    "isInline": "is_inline",
    "contentId": "content_id",
    "contentBytes": "content_base64",
    "sourceUrl": "url",
    "lastModifiedDateTime": "last_modified",
}


class LoadError(Exception):
    """A mailbox source that cannot be read or understood; the message says which and why."""


def load_path(mailbox: Mailbox, path: Path) -> None:
    """Load a directory of ``.eml`` files or a ``.json``/``.toml`` description file."""
    if path.is_dir():
        load_directory(mailbox, path)
    elif path.suffix.lower() in (".json", ".toml"):
        load_description(mailbox, path)
    elif not path.exists():
        raise LoadError(f"{path}: no such file or directory")
    else:
        raise LoadError(f"{path}: expected a directory of .eml files or a .json/.toml file")


# -- directories of .eml files ----------------------------------------------------------


def load_directory(mailbox: Mailbox, path: Path) -> None:
    try:
        entries = sorted(path.iterdir())
    except OSError as error:
        raise LoadError(f"{path}: cannot read directory: {error.strerror}") from None
    inbox = mailbox.well_known["inbox"]
    count = 0
    for entry in entries:
        if entry.is_dir():
            folder = mailbox.child_named(mailbox.top, entry.name) or mailbox.add_folder(
                mailbox.top, entry.name
            )
            count += _load_folder(mailbox, folder, entry)
        elif entry.suffix.lower() == ".eml":
            count += _load_eml(mailbox, inbox, entry)
    log.info("loaded %d messages for %s from %s", count, mailbox.address, path)


def _load_folder(mailbox: Mailbox, folder: Folder, path: Path) -> int:
    try:
        entries = sorted(path.iterdir())
    except OSError as error:
        raise LoadError(f"{path}: cannot read directory: {error.strerror}") from None
    count = 0
    for entry in entries:
        if entry.is_dir():
            child = mailbox.child_named(folder, entry.name) or mailbox.add_folder(
                folder, entry.name
            )
            count += _load_folder(mailbox, child, entry)
        elif entry.suffix.lower() == ".eml":
            count += _load_eml(mailbox, folder, entry)
    return count


def _load_eml(mailbox: Mailbox, folder: Folder, path: Path) -> int:
    mailbox.add_message(folder, read_eml(path))
    return 1


def read_eml(path: Path) -> Message:
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError as error:
        raise LoadError(f"{path}: cannot read: {error.strerror}") from None
    reload = None
    if len(data) > KEEP_FILE_IN_MEMORY:
        reload = path.read_bytes
    return mime.message_from_mime(data, fallback_time=mtime, reload=reload)


# -- description files ------------------------------------------------------------------


def load_description(mailbox: Mailbox, path: Path) -> None:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise LoadError(f"{path}: cannot read: {error.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text.decode("utf-8"))
        else:
            data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise LoadError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from None
    try:
        apply_description(mailbox, data, base=path.parent)
    except (LoadError, ValueError, TypeError, KeyError) as error:
        raise LoadError(f"{path}: {error}") from None


def apply_description(mailbox: Mailbox, data: Mapping[str, Any], *, base: Path) -> None:
    """Add the folders and messages of a parsed description to ``mailbox``."""
    data = _normalise(data)
    if data.get("display_name"):
        mailbox.display_name = str(data["display_name"])
    for index, spec in enumerate(data.get("messages") or []):
        _add_message(mailbox, mailbox.well_known["inbox"], spec, base, f"messages[{index}]")
    for index, spec in enumerate(data.get("folders") or []):
        _add_folder(mailbox, mailbox.top, spec, base, f"folders[{index}]")


def _normalise(data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError("expected an object (table)")
    return {_ALIASES.get(key, key): value for key, value in data.items()}


def _add_folder(
    mailbox: Mailbox, parent: Folder, raw: Mapping[str, Any], base: Path, at: str
) -> None:
    spec = _normalise(raw)
    well_known = spec.get("well_known")
    name = spec.get("name")
    folder: Folder | None = None
    if well_known:
        folder = mailbox.well_known.get(str(well_known).lower())
        if folder is None:
            display = name or str(well_known).title()
            folder = mailbox.add_folder(
                parent,
                display,
                well_known=str(well_known).lower(),
                is_hidden=bool(spec.get("hidden")),
            )
    else:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{at}: a folder needs a non-empty name or a well_known name")
        folder = mailbox.child_named(parent, name)
        if folder is None:
            folder = mailbox.add_folder(
                parent,
                name,
                is_hidden=bool(spec.get("hidden", False)),
                search_filter=spec.get("search_filter"),
            )
    for index, message in enumerate(spec.get("messages") or []):
        _add_message(mailbox, folder, message, base, f"{at}.messages[{index}]")
    for index, child in enumerate(spec.get("folders") or []):
        _add_folder(mailbox, folder, child, base, f"{at}.folders[{index}]")


def _time(value: Any, at: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if hasattr(value, "timestamp"):  # TOML dates arrive as datetime objects
        return float(value.timestamp())
    try:
        return parse_datetime(str(value))
    except Exception:
        raise ValueError(f"{at}: {value!r} is not an ISO 8601 time with a zone") from None


def _address(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        inner = value.get("emailAddress", value)
        return (str(inner.get("name") or ""), str(inner.get("address") or ""))
    name, address = email.utils.parseaddr(str(value))
    return (name, address)


def _add_message(
    mailbox: Mailbox, folder: Folder, raw: Mapping[str, Any], base: Path, at: str
) -> None:
    spec = _normalise(raw)
    message = build_message(spec, base, at)
    mailbox.add_message(folder, message)


def build_message(spec: dict[str, Any], base: Path, at: str) -> Message:
    if spec.get("eml"):
        message = read_eml(base / str(spec["eml"]))
        for index, extra in enumerate(spec.get("attachments") or []):
            where = f"{at}.attachments[{index}]"
            message.take_attachment(build_attachment(_normalise(extra), base, where))
        return message
    received = _time(spec.get("received"), f"{at}.received") or DEFAULT_TIME
    subject = spec.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise ValueError(f"{at}.subject must be text or null")
    attachments = [
        build_attachment(_normalise(a), base, f"{at}.attachments[{i}]")
        for i, a in enumerate(spec.get("attachments") or [])
    ]
    return Message(
        subject,
        received,
        sent=_time(spec.get("sent"), f"{at}.sent"),
        sender=_address(spec.get("sender")),
        recipients=[a for a in map(_address, spec.get("to") or []) if a],
        internet_message_id=spec.get("internet_message_id"),
        body=str(spec.get("body") or ""),
        body_type=str(spec.get("body_type") or "text"),
        is_read=bool(spec.get("is_read", False)),
        attachments=attachments,
    )


def _content(spec: dict[str, Any], at: str) -> Content:
    if "content" in spec:
        return BytesContent(str(spec["content"]).encode("utf-8"))
    if "content_base64" in spec:
        try:
            return BytesContent(base64.b64decode(str(spec["content_base64"]), validate=True))
        except (binascii.Error, ValueError):
            raise ValueError(f"{at}.content_base64 is not valid base64") from None
    if "size" in spec:
        size = parse_size(spec["size"], f"{at}.size")
        seed = spec.get("seed")
        if seed is None:
            seed = derive_seed(at, size)
        return GeneratedContent(int(seed), size)
    return BytesContent(b"")


def parse_size(value: Any, at: str) -> int:
    """A byte count: a number, or text with a k/m/g suffix (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().lower()
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    factor = 1
    if text and text[-1] == "b":
        text = text[:-1]
    if text and text[-1] in units:
        factor = units[text[-1]]
        text = text[:-1]
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{at}: {value!r} is not a size (e.g. 1500, 64k, 2m)") from None
    if number < 0:
        raise ValueError(f"{at}: a size cannot be negative")
    return int(number * factor)


def build_attachment(spec: dict[str, Any], base: Path, at: str) -> Attachment:
    kind = str(spec.get("kind", "file")).lower()
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{at}.name must be text or null")
    last_modified = _time(spec.get("last_modified"), f"{at}.last_modified")
    if kind == "file":
        return Attachment(
            "file",
            name,
            spec.get("content_type") or "application/octet-stream",
            _content(spec, at),
            is_inline=bool(spec.get("is_inline", False)),
            content_id=spec.get("content_id"),
            last_modified=last_modified,
        )
    if kind == "item":
        item_spec = spec.get("item") or {}
        if not isinstance(item_spec, Mapping):
            raise ValueError(f"{at}.item must be an object")
        return Attachment(
            "item",
            name,
            None,
            None,
            item=build_item(dict(item_spec), base, f"{at}.item"),
            is_inline=bool(spec.get("is_inline", False)),
            last_modified=last_modified,
        )
    if kind == "reference":
        url = spec.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError(f"{at}: a reference attachment needs a url")
        return Attachment(
            "reference",
            name,
            spec.get("content_type"),
            None,
            source_url=url,
            last_modified=last_modified,
        )
    raise ValueError(f"{at}.kind must be file, item or reference, not {kind!r}")


def build_item(spec: dict[str, Any], base: Path, at: str) -> Item:
    """An attached mail, event or contact; its fields use Graph's property names."""
    item_type = str(spec.pop("type", "message")).lower()
    if item_type == "message":
        if spec.get("eml"):
            data = (base / str(spec["eml"])).read_bytes()
            inner = mime.message_from_mime(data, fallback_time=DEFAULT_TIME)
            content: Content = BytesContent(data)
        else:
            inner = build_message(_normalise(spec), base, at)
            content = BytesContent(mime.message_to_mime(inner))
        fields: dict[str, object] = {
            "subject": inner.subject,
            "receivedDateTime": inner.received,
            "from": inner.sender,
            "internetMessageId": inner.internet_message_id,
            "hasAttachments": bool(inner.attachments),
        }
        return Item("message", fields, content)
    if item_type == "event":
        uid = f"{derive_seed(at, json.dumps(spec, sort_keys=True, default=str)):x}@emulator"
        return Item("event", spec, BytesContent(mime.event_to_ics(spec, uid)))
    if item_type == "contact":
        return Item("contact", spec, BytesContent(mime.contact_to_vcard(spec)))
    raise ValueError(f"{at}.type must be message, event or contact, not {item_type!r}")

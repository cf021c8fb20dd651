"""Graph JSON for folders, messages and attachments, shaped as Graph returns them."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from exchange_fuse.emulator.quirks import Quirks
from exchange_fuse.emulator.store import Attachment, Folder, Mailbox, Message

Json = dict[str, object]


@dataclass(frozen=True, slots=True)
class View:
    """How one request wants objects rendered."""

    mailbox: Mailbox
    immutable: bool
    quirks: Quirks
    text_body: bool = False


def timestamp(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- folders --------------------------------------------------------------------------------

FOLDER_FIELDS = {
    name.lower(): name
    for name in (
        "id",
        "displayName",
        "parentFolderId",
        "childFolderCount",
        "unreadItemCount",
        "totalItemCount",
        "isHidden",
    )
}


def folder_json(folder: Folder, fields: list[str] | None) -> Json:
    data: Json = {}
    if folder.is_search_folder:
        data["@odata.type"] = "#microsoft.graph.mailSearchFolder"
    for name in fields or FOLDER_FIELDS.values():
        data[name] = _FOLDER_VALUES[name](folder)
    if "id" not in data:
        data = {"id": folder.id, **data}
    if folder.is_search_folder and fields is None:
        data["isSupported"] = True
        data["filterQuery"] = folder.search_filter
    return data


_FOLDER_VALUES: dict[str, Callable[[Folder], object]] = {
    "id": lambda f: f.id,
    "displayName": lambda f: f.display_name,
    "parentFolderId": lambda f: f.parent.id if f.parent else None,
    "childFolderCount": lambda f: len(f.children),
    "unreadItemCount": lambda f: f.unread_count(),
    "totalItemCount": lambda f: f.total_count(),
    "isHidden": lambda f: f.is_hidden,
}


# -- attachments ----------------------------------------------------------------------------

ATTACHMENT_BASE_FIELDS = {
    name.lower(): name
    for name in ("id", "lastModifiedDateTime", "name", "contentType", "size", "isInline")
}
ATTACHMENT_FIELDS = {
    **ATTACHMENT_BASE_FIELDS,
    **{
        name.lower(): name
        for name in (
            "contentId",
            "contentLocation",
            "contentBytes",
            "sourceUrl",
            "providerType",
            "permission",
            "isFolder",
        )
    },
}
_ODATA_TYPES = {
    "file": "#microsoft.graph.fileAttachment",
    "item": "#microsoft.graph.itemAttachment",
    "reference": "#microsoft.graph.referenceAttachment",
}
ITEM_CONTENT_TYPES = {
    "message": "message/rfc822",
    "event": "text/calendar; charset=utf-8",
    "contact": "text/vcard; charset=utf-8",
}
ITEM_ODATA_TYPES = {
    "message": "#microsoft.graph.message",
    "event": "#microsoft.graph.event",
    "contact": "#microsoft.graph.contact",
}


def attachment_json(
    message: Message,
    attachment: Attachment,
    view: View,
    fields: list[str] | None,
    *,
    expand_item: bool = False,
) -> Json:
    data: Json = {"@odata.type": _ODATA_TYPES[attachment.kind]}
    content_type = attachment.content_type
    if attachment.item is not None:
        quirk = view.quirks.item_without_content_type
        content_type = None if quirk else ITEM_CONTENT_TYPES[attachment.item.type]
    base: Json = {
        "id": view.mailbox.attachment_id(message, attachment, view.immutable),
        "lastModifiedDateTime": timestamp(attachment.last_modified),
        "name": attachment.name,
        "contentType": content_type,
        "size": attachment.reported_size(view.quirks.size_overhead),
        "isInline": attachment.is_inline,
    }
    if fields is not None:
        for name in fields:
            data[name] = base[name] if name in base else _extra(attachment, name, view)
        if "id" not in data:
            data["id"] = base["id"]
    else:
        data.update(base)
        if attachment.kind == "file":
            data["contentId"] = attachment.content_id
            data["contentLocation"] = None
            data["contentBytes"] = _content_bytes(attachment)
        elif attachment.kind == "item" and not view.quirks.item_without_content_bytes:
            data["contentBytes"] = _content_bytes(attachment)
        elif attachment.kind == "reference":
            data.update(_reference_fields(attachment))
    if expand_item and attachment.item is not None:
        data["item"] = item_json(attachment)
    return data


def _extra(attachment: Attachment, name: str, view: View) -> object:
    if name == "contentBytes":
        if attachment.kind == "item" and view.quirks.item_without_content_bytes:
            return None
        return _content_bytes(attachment) if attachment.kind != "reference" else None
    if name == "contentId":
        return attachment.content_id
    if name == "contentLocation":
        return None
    return _reference_fields(attachment).get(name)


def _content_bytes(attachment: Attachment) -> str:
    content = attachment.item.content if attachment.item else attachment.content
    return base64.b64encode(content.read() if content else b"").decode("ascii")


def _reference_fields(attachment: Attachment) -> Json:
    return {
        "sourceUrl": attachment.source_url,
        "providerType": "oneDriveBusiness",
        "thumbnailUrl": None,
        "previewUrl": None,
        "permission": "view",
        "isFolder": False,
    }


def item_json(attachment: Attachment) -> Json:
    item = attachment.item
    assert item is not None
    data: Json = {"@odata.type": ITEM_ODATA_TYPES[item.type], "id": ""}
    for key, value in item.fields.items():
        if key == "receivedDateTime" and isinstance(value, int | float):
            value = timestamp(value)
        elif key == "from" and isinstance(value, tuple):
            value = _email(value)
        data[key] = value
    return data


# -- messages -------------------------------------------------------------------------------

MESSAGE_FIELDS = {
    name.lower(): name
    for name in (
        "id",
        "createdDateTime",
        "lastModifiedDateTime",
        "changeKey",
        "categories",
        "receivedDateTime",
        "sentDateTime",
        "hasAttachments",
        "internetMessageId",
        "subject",
        "bodyPreview",
        "importance",
        "parentFolderId",
        "conversationId",
        "isDeliveryReceiptRequested",
        "isReadReceiptRequested",
        "isRead",
        "isDraft",
        "webLink",
        "inferenceClassification",
        "body",
        "sender",
        "from",
        "toRecipients",
        "ccRecipients",
        "bccRecipients",
        "replyTo",
        "flag",
    )
}
MESSAGE_FIELDS["attachments"] = "attachments"

_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def _email(address: tuple[str, str] | None) -> Json | None:
    if address is None:
        return None
    name, addr = address
    return {"emailAddress": {"name": name or addr, "address": addr}}


def change_key(message: Message) -> str:
    raw = message.serial.to_bytes(4, "big") + message.change_count.to_bytes(4, "big")
    return "CQAAABYAAA" + base64.b64encode(raw).decode("ascii")


def plain_text(message: Message) -> str:
    text = message.body_text()
    if message.body_type == "html":
        text = _TAGS.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def _body(message: Message, view: View) -> Json:
    if view.text_body and message.body_type == "html":
        return {"contentType": "text", "content": plain_text(message)}
    return {"contentType": message.body_type, "content": message.body_text()}


def _web_link(message: Message, view: View) -> str:
    item = quote(view.mailbox.message_id(message, view.immutable), safe="")
    return f"https://outlook.office365.com/owa/?ItemID={item}&exvsurl=1&viewmodel=ReadMessageItem"


_MESSAGE_VALUES: dict[str, Callable[[Message, View], object]] = {
    "createdDateTime": lambda m, v: timestamp(m.created),
    "lastModifiedDateTime": lambda m, v: timestamp(m.modified),
    "changeKey": lambda m, v: change_key(m),
    "categories": lambda m, v: [],
    "receivedDateTime": lambda m, v: timestamp(m.received),
    "sentDateTime": lambda m, v: timestamp(m.sent),
    "hasAttachments": lambda m, v: m.has_attachments(not v.quirks.inline_not_counted),
    "internetMessageId": lambda m, v: m.internet_message_id,
    "subject": lambda m, v: m.subject,
    "bodyPreview": lambda m, v: plain_text(m)[:255],
    "importance": lambda m, v: "normal",
    "parentFolderId": lambda m, v: m.folder.id if m.folder else None,
    "conversationId": lambda m, v: "AAQk" + base64.b64encode(m.serial.to_bytes(6, "big")).decode(),
    "isDeliveryReceiptRequested": lambda m, v: False,
    "isReadReceiptRequested": lambda m, v: False,
    "isRead": lambda m, v: m.is_read,
    "isDraft": lambda m, v: m.is_draft,
    "webLink": _web_link,
    "inferenceClassification": lambda m, v: "focused",
    "body": _body,
    "sender": lambda m, v: _email(m.sender),
    "from": lambda m, v: _email(m.sender),
    "toRecipients": lambda m, v: [_email(r) for r in m.recipients],
    "ccRecipients": lambda m, v: [],
    "bccRecipients": lambda m, v: [],
    "replyTo": lambda m, v: [],
    "flag": lambda m, v: {"flagStatus": "notFlagged"},
}


def message_json(
    message: Message,
    view: View,
    fields: list[str] | None,
    expand_attachments: list[str] | None = None,
) -> Json:
    """A message; ``expand_attachments`` is None (no $expand) or the attachment fields."""
    data: Json = {
        "@odata.etag": f'W/"{change_key(message)}"',
        "id": view.mailbox.message_id(message, view.immutable),
    }
    for name in fields if fields is not None else _MESSAGE_VALUES:
        if name in ("id", "attachments"):
            continue
        data[name] = _MESSAGE_VALUES[name](message, view)
    if expand_attachments is not None:
        selected = expand_attachments or None
        data["attachments"] = [
            attachment_json(message, attachment, view, selected)
            for attachment in message.attachments
        ]
    return data


def message_value(message: Message, prop: str) -> object:
    """A property's value for filtering and sorting (times as numbers)."""
    if prop == "receivedDateTime":
        return message.received
    if prop == "sentDateTime":
        return message.sent
    if prop == "createdDateTime":
        return message.created
    if prop == "lastModifiedDateTime":
        return message.modified
    if prop == "subject":
        return message.subject
    if prop == "isRead":
        return message.is_read
    raise KeyError(prop)

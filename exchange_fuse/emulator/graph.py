"""Graph's mail endpoints under ``/v1.0``: routing, handlers and ``$batch``.

Routing works on the raw request path split at ``/`` and then percent-decoded segment by
segment, so an id containing an encoded ``/`` stays one segment, while an id sent with a raw
``/`` falls apart as it does against Graph. Handlers are synchronous: the mailbox model is
only touched between awaits, so every request sees and leaves it consistent.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from exchange_fuse.emulator import delta, mime
from exchange_fuse.emulator.content import BytesContent, Content, derive_seed
from exchange_fuse.emulator.errors import (
    GraphError,
    bad_request,
    folder_not_found,
    invalid_user,
    item_not_found,
    unknown_property,
)
from exchange_fuse.emulator.faults import Limiter, Settings
from exchange_fuse.emulator.odata import (
    DEFAULT_TOP,
    Query,
    check_filter_and_order,
    compare,
    encode_token,
    link,
    odata_sorter,
    page_offset,
    parse_datetime,
    parse_filter,
    parse_query,
    select_fields,
)
from exchange_fuse.emulator.render import (
    ATTACHMENT_BASE_FIELDS,
    ATTACHMENT_FIELDS,
    FOLDER_FIELDS,
    ITEM_CONTENT_TYPES,
    MESSAGE_FIELDS,
    Json,
    View,
    attachment_json,
    folder_json,
    message_json,
    message_value,
)
from exchange_fuse.emulator.store import (
    WELL_KNOWN_NAMES,
    Attachment,
    Folder,
    Item,
    Mailbox,
    Message,
    NotFound,
    Store,
)

log = logging.getLogger(__name__)

JSON_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)
MAX_BATCH = 20
MAX_POSTED_ATTACHMENT = 3 * 1024 * 1024


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    stream: Content | None = None  # $value content, sent with an exact Content-Length


def json_reply(status: int, data: object, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, headers=headers or {})


def error_reply(error: GraphError, request_id: str, client_request_id: str | None) -> Reply:
    return json_reply(error.status, error.body(request_id, client_request_id), error.headers)


@dataclass(slots=True)
class GraphRequest:
    method: str
    path: str  # as sent, starting with /v1.0
    segments: list[str]  # percent-decoded, after /v1.0
    raw_query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    application: str
    _query: Query | None = None

    @property
    def query(self) -> Query:
        if self._query is None:
            self._query = parse_query(self.raw_query)
        return self._query

    def prefers(self, token: str) -> bool:
        return token.lower() in self.headers.get("prefer", "").lower()

    @property
    def immutable(self) -> bool:
        prefer = self.headers.get("prefer", "").replace(" ", "").lower()
        return 'idtype="immutableid"' in prefer or "idtype=immutableid" in prefer

    def max_page_size(self) -> int | None:
        for part in self.headers.get("prefer", "").split(","):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "odata.maxpagesize":
                try:
                    return max(1, min(1000, int(value.strip().strip('"'))))
                except ValueError:
                    return None
        return None

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise bad_request("Unable to read JSON request payload.") from None
        if not isinstance(data, dict):
            raise bad_request("The request payload must be a JSON object.")
        return data


def split_path(raw_path: str) -> list[str]:
    """Segments after ``/v1.0``, each percent-decoded on its own."""
    parts = raw_path.split("/")
    return [unquote(part) for part in parts[2:] if part != ""]


_DELTA = ("delta", "microsoft.graph.delta")
# Collections whose next path segment is an id (or an address).
_KEYED = {
    "users": "{mailbox}",
    "mailfolders": "{folder}",
    "childfolders": "{folder}",
    "messages": "{message}",
    "attachments": "{attachment}",
}
_CANONICAL = {"mailfolders": "mailFolders", "childfolders": "childFolders"}


def route_name(method: str, segments: list[str]) -> str:
    """The request's route with ids replaced, for the stats: ``GET /users/{mailbox}/...``."""
    parts: list[str] = []
    placeholder: str | None = None
    for segment in segments:
        lowered = segment.lower()
        if placeholder is not None and lowered not in _DELTA:
            parts.append(placeholder)
            placeholder = None
            continue
        parts.append(_CANONICAL.get(lowered, segment))
        placeholder = _KEYED.get(lowered)
    return f"{method} /" + "/".join(parts)


Handler = Callable[[], Reply]


class Graph:
    """The Graph mail API over a ``Store``."""

    def __init__(self, store: Store, settings: Settings, limiter: Limiter, graph_url: str) -> None:
        self.store = store
        self.settings = settings
        self.limiter = limiter
        self.graph_url = graph_url
        self._mailbox_order: dict[tuple[str, int, object], list[Message]] = {}
        self.sync_chains = delta.SyncChains()

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, request: GraphRequest) -> tuple[str, Reply]:
        """Route and answer one request; returns the route name (for stats) and the reply."""
        route = route_name(request.method, request.segments)
        request_id = request.headers.get("request-id", "-")
        try:
            return route, self._resolve(request)()
        except GraphError as error:
            return route, error_reply(error, request_id, None)
        except Exception:
            # A defect here must not take the server down; answer as Graph would.
            log.exception("failed to answer %s", route)
            failure = GraphError(500, "InternalServerError", "An internal server error occurred.")
            return route, error_reply(failure, request_id, None)

    def _resolve(self, request: GraphRequest) -> Handler:
        """Walk the path to the handler, looking up what it names on the way."""
        seg = request.segments
        method = request.method
        if seg == ["$batch"]:
            return self._method(method, "POST", lambda: self.batch(request))
        if not seg:
            raise bad_request("Invalid request.")
        if seg[0].lower() == "me":
            raise bad_request("/me request is only valid with delegated authentication flow.")
        if seg[0].lower() != "users" or len(seg) < 2:
            raise bad_request(f"Resource not found for the segment '{seg[0]}'.")

        address = seg[1]
        try:
            mailbox = self.store.mailbox(address)
        except NotFound:
            raise invalid_user(address) from None
        self.limiter.check_mailbox(request.application, mailbox.address)
        self.limiter.draw_faults()
        view = View(
            mailbox,
            request.immutable,
            self.settings.quirks,
            text_body='outlook.body-content-type="text"' in request.headers.get("prefer", ""),
        )
        rest = seg[2:]
        lowered = [part.lower() for part in rest]

        if not rest:
            raise GraphError(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        if lowered == ["mailfolders"]:
            if method == "POST":
                return lambda: self.create_folder(request, view, mailbox.top)
            return self._method(
                method, "GET", lambda: self.list_folders(request, view, mailbox.top)
            )
        if lowered[0] == "mailfolders" and len(rest) == 2 and lowered[1] in _DELTA:
            return self._method(method, "GET", lambda: delta.folder_delta(self, request, view))
        if lowered[0] == "mailfolders":
            folder = self._folder(mailbox, rest[1])
            index = 2
            while (
                index + 1 < len(rest)
                and lowered[index] == "childfolders"
                and lowered[index + 1] not in _DELTA
            ):
                folder = self._folder(mailbox, rest[index + 1])
                index += 2
            return self._folder_route(request, view, folder, rest[index:])
        if lowered[0] == "messages":
            return self._messages_route(request, view, None, rest)
        raise bad_request(f"Resource not found for the segment '{rest[0]}'.")

    def _folder_route(
        self, request: GraphRequest, view: View, folder: Folder, rest: list[str]
    ) -> Handler:
        method = request.method
        lowered = [part.lower() for part in rest]
        if not rest:
            if method == "PATCH":
                return lambda: self.update_folder(request, folder)
            if method == "DELETE":
                return lambda: self.delete_folder(view, folder)
            return self._method(method, "GET", lambda: self.get_folder(request, folder))
        if lowered == ["childfolders"]:
            if method == "POST":
                return lambda: self.create_folder(request, view, folder)
            return self._method(method, "GET", lambda: self.list_folders(request, view, folder))
        if lowered[0] == "messages":
            return self._messages_route(request, view, folder, rest)
        raise bad_request(f"Resource not found for the segment '{rest[0]}'.")

    def _messages_route(
        self, request: GraphRequest, view: View, folder: Folder | None, rest: list[str]
    ) -> Handler:
        method = request.method
        lowered = [part.lower() for part in rest]
        if len(rest) == 1:
            if method == "POST":
                target = folder or view.mailbox.well_known["drafts"]
                return lambda: self.create_message(request, view, target)
            return self._method(method, "GET", lambda: self.list_messages(request, view, folder))
        if len(rest) == 2 and lowered[1] in _DELTA:
            if folder is None:
                raise bad_request("Delta of messages is available per folder only.")
            in_folder = folder
            return self._method(
                method, "GET", lambda: delta.message_delta(self, request, view, in_folder)
            )
        message = self._message(view.mailbox, rest[1], folder)
        tail = lowered[2:]
        if not tail:
            if method == "DELETE":
                return lambda: self.delete_message(view, message)
            if method == "PATCH":
                return lambda: self.update_message(request, view, message)
            return self._method(method, "GET", lambda: self.get_message(request, view, message))
        if tail == ["$value"]:
            return self._method(method, "GET", lambda: self.message_mime(message))
        if tail in (["move"], ["microsoft.graph.move"]):
            return self._method(method, "POST", lambda: self.move_message(request, view, message))
        if tail in (["permanentdelete"], ["microsoft.graph.permanentdelete"]):
            return self._method(method, "POST", lambda: self.permanent_delete(view, message))
        if tail[0] == "attachments":
            return self._attachments_route(request, view, message, rest[3:])
        raise bad_request(f"Resource not found for the segment '{rest[2]}'.")

    def _attachments_route(
        self, request: GraphRequest, view: View, message: Message, rest: list[str]
    ) -> Handler:
        method = request.method
        if not rest:
            if method == "POST":
                return lambda: self.create_attachment(request, view, message)
            return self._method(
                method, "GET", lambda: self.list_attachments(request, view, message)
            )
        try:
            attachment = view.mailbox.attachment(message, rest[0])
        except NotFound:
            raise item_not_found() from None
        if len(rest) == 1:
            if method == "DELETE":
                return lambda: self.delete_attachment(view, message, attachment)
            return self._method(
                method, "GET", lambda: self.get_attachment(request, view, message, attachment)
            )
        if len(rest) == 2 and rest[1] == "$value":
            return self._method(method, "GET", lambda: self.attachment_value(attachment))
        raise bad_request(f"Resource not found for the segment '{rest[1]}'.")

    @staticmethod
    def _method(method: str, allowed: str, handler: Callable[[], Reply]) -> Callable[[], Reply]:
        if method != allowed:
            raise GraphError(
                405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed."
            )
        return handler

    def _folder(self, mailbox: Mailbox, key: str) -> Folder:
        try:
            return mailbox.folder(key)
        except NotFound:
            if mailbox.codec.decode(key) is None and key.lower() not in WELL_KNOWN_NAMES:
                raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.") from None
            raise folder_not_found() from None

    def _message(self, mailbox: Mailbox, key: str, via: Folder | None) -> Message:
        try:
            message = mailbox.message(key)
        except NotFound:
            if mailbox.codec.decode(key) is None:
                raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.") from None
            raise item_not_found() from None
        folder = message.folder
        # Items in Recoverable Items are reachable only through that folder.
        if folder is None or (not mailbox.is_under_top(folder) and via is not folder):
            raise item_not_found()
        return message

    def context(self, mailbox: Mailbox, tail: str) -> str:
        return f"{self.graph_url}/$metadata#users('{mailbox.address}')/{tail}"

    # -- folders --------------------------------------------------------------------------

    def list_folders(self, request: GraphRequest, view: View, parent: Folder) -> Reply:
        query = request.query
        fields = select_fields(query.select, FOLDER_FIELDS, "mailFolder")
        hidden = (query.get("includeHiddenFolders") or "").lower() == "true"
        children = [c for c in parent.children if hidden or not c.is_hidden]
        top = query.top or DEFAULT_TOP
        offset = page_offset(query)
        page = children[offset : offset + top]
        body: Json = {"@odata.context": self.context(view.mailbox, "mailFolders")}
        body["value"] = [folder_json(folder, fields) for folder in page]
        if offset + top < len(children):
            body["@odata.nextLink"] = self._next(request, offset + top)
        return json_reply(200, body)

    def _next(self, request: GraphRequest, offset: int) -> str:
        token = encode_token({"o": offset})
        return link(self.origin_url(request.path), request.query.params, **{"$skiptoken": token})

    def origin_url(self, path: str) -> str:
        return self.graph_url.rsplit("/v1.0", 1)[0] + path

    def get_folder(self, request: GraphRequest, folder: Folder) -> Reply:
        fields = select_fields(request.query.select, FOLDER_FIELDS, "mailFolder")
        body: Json = {"@odata.context": self.context(folder.mailbox, "mailFolders/$entity")}
        body.update(folder_json(folder, fields))
        return json_reply(200, body)

    def create_folder(self, request: GraphRequest, view: View, parent: Folder) -> Reply:
        data = request.json()
        name = data.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("The displayName of a folder is required.", "ErrorInvalidParameter")
        mailbox = view.mailbox
        if mailbox.child_named(parent, name) is not None:
            raise GraphError(
                409, "ErrorFolderExists", "A folder with the specified name already exists."
            )
        folder = mailbox.add_folder(parent, name, is_hidden=bool(data.get("isHidden", False)))
        body: Json = {"@odata.context": self.context(mailbox, "mailFolders/$entity")}
        body.update(folder_json(folder, None))
        return json_reply(201, body)

    def update_folder(self, request: GraphRequest, folder: Folder) -> Reply:
        data = request.json()
        mailbox = folder.mailbox
        if "isHidden" in data and bool(data["isHidden"]) != folder.is_hidden:
            raise bad_request("isHidden can only be set when a folder is created.")
        name = data.get("displayName")
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise bad_request("The displayName of a folder may not be empty.")
            same = mailbox.child_named(folder.parent, name) if folder.parent else None
            if same is not None and same is not folder:
                raise GraphError(
                    409, "ErrorFolderExists", "A folder with the specified name already exists."
                )
            mailbox.rename_folder(folder, name)
        body: Json = {"@odata.context": self.context(mailbox, "mailFolders/$entity")}
        body.update(folder_json(folder, None))
        return json_reply(200, body)

    def delete_folder(self, view: View, folder: Folder) -> Reply:
        mailbox = view.mailbox
        if folder.well_known or folder.parent is None or not mailbox.is_under_top(folder):
            raise GraphError(
                403, "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."
            )
        deleted_items = mailbox.well_known.get("deleteditems")
        inside_deleted = False
        current: Folder | None = folder.parent
        while current is not None:
            if current is deleted_items:
                inside_deleted = True
            current = current.parent
        if deleted_items is None or inside_deleted:
            mailbox.remove_folder(folder)
        else:
            # Like Outlook, a deleted folder goes to Deleted Items first.
            existing = mailbox.child_named(deleted_items, folder.display_name)
            if existing is not None:
                mailbox.rename_folder(folder, f"{folder.display_name} {folder.serial}")
            mailbox.move_folder(folder, deleted_items)
        return Reply(204, content_type=None)

    # -- messages -------------------------------------------------------------------------

    def _matching(self, view: View, query: Query, folder: Folder | None) -> list[Message]:
        check_filter_and_order(query)
        order = query.orderby or [("receivedDateTime", True)]
        key = (tuple(order), tuple(query.filters), view.quirks.inline_not_counted)
        sorter = odata_sorter(order, message_value)  # type: ignore[arg-type]
        mailbox = view.mailbox

        def sort_and_filter(messages: list[Message]) -> list[Message]:
            messages.sort(key=lambda m: m.serial, reverse=True)
            chosen = self._filter(view, messages, query)
            return sorter(chosen)

        if folder is not None and folder.is_search_folder:
            assert folder.search_filter is not None
            source = list(mailbox.all_messages())
            clauses = parse_filter(folder.search_filter)
            source = [m for m in source if self._passes(view, m, clauses)]
            return sort_and_filter(source)
        if folder is not None:
            return folder.ordered(key, sort_and_filter)
        cache_key = (mailbox.address, mailbox.seq, key)
        cached = self._mailbox_order.get(cache_key)
        if cached is None:
            cached = sort_and_filter(list(mailbox.all_messages()))
            self._mailbox_order = {cache_key: cached}
        return cached

    def _filter(self, view: View, messages: list[Message], query: Query) -> list[Message]:
        if not query.filters:
            return messages
        return [m for m in messages if self._passes(view, m, query.filters)]

    def _passes(self, view: View, message: Message, clauses: list[Any]) -> bool:
        for clause in clauses:
            if clause.property == "hasAttachments":
                value: object = message.has_attachments(not view.quirks.inline_not_counted)
            else:
                value = message_value(message, clause.property)
            if not compare(value, clause.operator, clause.value):
                return False
        return True

    def list_messages(self, request: GraphRequest, view: View, folder: Folder | None) -> Reply:
        query = request.query
        fields = select_fields(query.select, MESSAGE_FIELDS, "message")
        expand = self.attachment_expansion(query)
        messages = self._matching(view, query, folder)
        top = query.top or DEFAULT_TOP
        offset = page_offset(query)
        page = messages[offset : offset + top]
        body: Json = {"@odata.context": self.context(view.mailbox, "messages")}
        body["value"] = [message_json(m, view, fields, expand) for m in page]
        if offset + top < len(messages):
            body["@odata.nextLink"] = self._next(request, offset + top)
        return json_reply(200, body, self.preference(request))

    @staticmethod
    def attachment_expansion(query: Query) -> list[str] | None:
        if query.expand_attachments is None:
            return None
        return select_fields(query.expand_attachments, ATTACHMENT_BASE_FIELDS, "attachment") or []

    @staticmethod
    def preference(request: GraphRequest) -> dict[str, str]:
        return {"Preference-Applied": 'IdType="ImmutableId"'} if request.immutable else {}

    def get_message(self, request: GraphRequest, view: View, message: Message) -> Reply:
        query = request.query
        fields = select_fields(query.select, MESSAGE_FIELDS, "message")
        expand = self.attachment_expansion(query)
        body: Json = {"@odata.context": self.context(view.mailbox, "messages/$entity")}
        body.update(message_json(message, view, fields, expand))
        return json_reply(200, body, self.preference(request))

    def message_mime(self, message: Message) -> Reply:
        content = message.mime or BytesContent(mime.message_to_mime(message))
        return Reply(200, content_type="message/rfc822", stream=content)

    def update_message(self, request: GraphRequest, view: View, message: Message) -> Reply:
        data = request.json()
        if "isRead" in data:
            message.is_read = bool(data["isRead"])
        if "subject" in data:
            subject = data["subject"]
            message.subject = subject if isinstance(subject, str) else None
        view.mailbox.touch_message(message)
        return self.get_message(request, view, message)

    def delete_message(self, view: View, message: Message) -> Reply:
        mailbox = view.mailbox
        deletions = mailbox.well_known["recoverableitemsdeletions"]
        if message.folder is deletions:
            raise GraphError(500, "ErrorCannotDeleteObject", "Object cannot be deleted.")
        # DELETE is a soft delete: the message goes to Recoverable Items, out of sight.
        mailbox.move_message(message, deletions)
        return Reply(204, content_type=None)

    def permanent_delete(self, view: View, message: Message) -> Reply:
        view.mailbox.remove_message(message)
        return Reply(204, content_type=None)

    def move_message(self, request: GraphRequest, view: View, message: Message) -> Reply:
        destination_id = request.json().get("destinationId")
        if not isinstance(destination_id, str) or not destination_id:
            raise bad_request("destinationId is required.", "ErrorInvalidParameter")
        destination = self._folder(view.mailbox, destination_id)
        if destination.is_search_folder or not view.mailbox.is_under_top(destination):
            raise bad_request("Messages cannot be moved to that folder.", "ErrorInvalidRequest")
        if destination is not message.folder:
            view.mailbox.move_message(message, destination)
        body: Json = {"@odata.context": f"{self.graph_url}/$metadata#message"}
        body.update(message_json(message, view, None))
        return json_reply(201, body, self.preference(request))

    def create_message(self, request: GraphRequest, view: View, folder: Folder) -> Reply:
        if folder.is_search_folder:
            raise bad_request("Messages cannot be created in a search folder.")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "text/plain":
            try:
                raw = base64.b64decode(request.body, validate=False)
            except (binascii.Error, ValueError):
                raise GraphError(
                    400,
                    "ErrorMimeContentInvalidBase64String",
                    "Invalid base64 string for MIME content.",
                ) from None
            message = mime.message_from_mime(raw, fallback_time=time.time())
        else:
            message = self._message_from_json(request.json())
        view.mailbox.add_message(folder, message)
        body: Json = {"@odata.context": self.context(view.mailbox, "messages/$entity")}
        body.update(message_json(message, view, None))
        return json_reply(201, body, self.preference(request))

    def _message_from_json(self, data: dict[str, Any]) -> Message:
        now = time.time()
        received = now
        if isinstance(data.get("receivedDateTime"), str):
            received = parse_datetime(data["receivedDateTime"])
        body = data["body"] if isinstance(data.get("body"), dict) else {}
        sender = _recipient(data.get("from") or data.get("sender"))
        recipients = [r for r in map(_recipient, data.get("toRecipients") or []) if r]
        subject = data.get("subject")
        message = Message(
            subject if isinstance(subject, str) else None,
            received,
            sender=sender,
            recipients=recipients,
            internet_message_id=data.get("internetMessageId"),
            body=str(body.get("content", "")),
            body_type="html" if str(body.get("contentType", "")).lower() == "html" else "text",
            is_read=bool(data.get("isRead", False)),
            is_draft=True,
        )
        for spec in data.get("attachments") or []:
            message.take_attachment(self._attachment_from_json(spec))
        return message

    # -- attachments ----------------------------------------------------------------------

    def list_attachments(self, request: GraphRequest, view: View, message: Message) -> Reply:
        query = request.query
        fields = select_fields(query.select, ATTACHMENT_FIELDS, "attachment")
        tail = f"users('{view.mailbox.address}')/messages('{message.serial}')/attachments"
        body: Json = {"@odata.context": f"{self.graph_url}/$metadata#{tail}"}
        body["value"] = [
            attachment_json(message, a, view, fields, expand_item=query.expand_item)
            for a in message.attachments
        ]
        return json_reply(200, body, self.preference(request))

    def get_attachment(
        self, request: GraphRequest, view: View, message: Message, attachment: Attachment
    ) -> Reply:
        query = request.query
        fields = select_fields(query.select, ATTACHMENT_FIELDS, "attachment")
        body: Json = {"@odata.context": self.context(view.mailbox, "messages/attachments/$entity")}
        body.update(
            attachment_json(message, attachment, view, fields, expand_item=query.expand_item)
        )
        return json_reply(200, body, self.preference(request))

    def attachment_value(self, attachment: Attachment) -> Reply:
        if attachment.kind == "reference":
            if self.settings.quirks.reference_value_405:
                raise GraphError(
                    405,
                    "ErrorInvalidRequest",
                    "The attachment is a link to a file; it has no content to download.",
                )
            url = attachment.source_url or ""
            shortcut = f"[InternetShortcut]\r\nURL={url}\r\n".encode()
            return Reply(
                200, content_type="application/internet-shortcut", stream=BytesContent(shortcut)
            )
        if attachment.item is not None:
            return Reply(
                200,
                content_type=ITEM_CONTENT_TYPES[attachment.item.type],
                stream=attachment.item.content,
            )
        assert attachment.content is not None
        return Reply(
            200,
            content_type=attachment.content_type or "application/octet-stream",
            stream=attachment.content,
        )

    def delete_attachment(self, view: View, message: Message, attachment: Attachment) -> Reply:
        view.mailbox.delete_attachment(message, attachment)
        return Reply(204, content_type=None)

    def create_attachment(self, request: GraphRequest, view: View, message: Message) -> Reply:
        attachment = self._attachment_from_json(request.json())
        view.mailbox.add_attachment(message, attachment)
        body: Json = {"@odata.context": self.context(view.mailbox, "messages/attachments/$entity")}
        body.update(attachment_json(message, attachment, view, None))
        return json_reply(201, body)

    def _attachment_from_json(self, data: dict[str, Any]) -> Attachment:
        if not isinstance(data, dict):
            raise bad_request("An attachment must be a JSON object.")
        odata_type = str(data.get("@odata.type", "")).lower().lstrip("#")
        name = data.get("name")
        name = name if isinstance(name, str) else None
        if odata_type == "microsoft.graph.fileattachment":
            try:
                content = base64.b64decode(str(data.get("contentBytes") or ""), validate=True)
            except (binascii.Error, ValueError):
                raise bad_request(
                    "contentBytes is not valid base64.", "ErrorInvalidRequest"
                ) from None
            if len(content) > MAX_POSTED_ATTACHMENT:
                raise GraphError(
                    413,
                    "RequestEntityTooLarge",
                    "Attachments of 3 MB or more need an upload session.",
                )
            return Attachment(
                "file",
                name,
                data.get("contentType") or "application/octet-stream",
                BytesContent(content),
                is_inline=bool(data.get("isInline", False)),
                content_id=data.get("contentId"),
            )
        if odata_type == "microsoft.graph.itemattachment":
            item_data = data.get("item")
            if not isinstance(item_data, dict):
                raise bad_request("An item attachment needs an item.", "ErrorInvalidRequest")
            item = item_from_json(item_data)
            return Attachment("item", name, None, None, item=item)
        if odata_type == "microsoft.graph.referenceattachment":
            url = data.get("sourceUrl")
            if not isinstance(url, str) or not url:
                raise bad_request(
                    "A reference attachment needs a sourceUrl.", "ErrorInvalidRequest"
                )
            return Attachment("reference", name, data.get("contentType"), None, source_url=url)
        raise bad_request(
            "The @odata.type of an attachment must be fileAttachment, itemAttachment or "
            "referenceAttachment.",
            "ErrorInvalidRequest",
        )

    # -- $batch ---------------------------------------------------------------------------

    def batch(self, request: GraphRequest) -> Reply:
        data = request.json()
        requests = data.get("requests")
        if not isinstance(requests, list) or not requests:
            raise bad_request("The batch needs a non-empty 'requests' array.", "BadRequest")
        if len(requests) > MAX_BATCH:
            raise bad_request(
                f"Number of batch request steps exceeds the maximum value of {MAX_BATCH}.",
                "MaximumValueExceeded",
            )
        ids = [str(r.get("id", "")).lower() if isinstance(r, dict) else "" for r in requests]
        if "" in ids or len(set(ids)) != len(ids):
            raise bad_request("Every batch request needs a unique id.", "BadRequest")
        statuses: dict[str, int] = {}
        responses = []
        for entry in requests:
            responses.append(self._batch_step(request, entry, statuses))
        return json_reply(200, {"responses": responses})

    def _batch_step(
        self, outer: GraphRequest, entry: dict[str, Any], statuses: dict[str, int]
    ) -> dict[str, Any]:
        step_id = str(entry["id"])
        depends = entry.get("dependsOn") or []
        if any(statuses.get(str(d).lower(), 424) >= 400 for d in depends):
            statuses[step_id.lower()] = 424
            return _batch_error(
                step_id, 424, "FailedDependency", "A request it depends on failed."
            )
        url = str(entry.get("url", ""))
        if url.startswith(("http://", "https://")) or not url:
            statuses[step_id.lower()] = 400
            return _batch_error(step_id, 400, "BadRequest", "Batch request URLs must be relative.")
        if not url.startswith("/"):
            url = "/" + url
        if url.lower().startswith("/v1.0/"):
            url = url[5:]
        path, _, raw_query = url.partition("?")
        headers = {k.lower(): str(v) for k, v in (entry.get("headers") or {}).items()}
        for name in ("prefer", "request-id"):
            if name in outer.headers and name not in headers:
                headers[name] = outer.headers[name]
        body = entry.get("body")
        raw_body = b""
        if body is not None:
            if "content-type" not in headers:
                statuses[step_id.lower()] = 400
                return _batch_error(
                    step_id,
                    400,
                    "BadRequest",
                    "A request with a body needs a Content-Type header.",
                )
            if isinstance(body, str):
                raw_body = (
                    body.encode()
                    if headers["content-type"].startswith("text/")
                    else (base64.b64decode(body))
                )
            else:
                raw_body = json.dumps(body).encode()
        inner = GraphRequest(
            method=str(entry.get("method", "GET")).upper(),
            path="/v1.0" + path,
            segments=split_path("/v1.0" + path),
            raw_query=raw_query,
            headers=headers,
            body=raw_body,
            application=outer.application,
        )
        if inner.segments == ["$batch"]:
            statuses[step_id.lower()] = 400
            return _batch_error(step_id, 400, "BadRequest", "A batch cannot contain a batch.")
        route, reply = self.handle(inner)
        self.limiter.stats.count(route, reply.status)
        self.limiter.stats.batch_steps += 1
        statuses[step_id.lower()] = reply.status
        response_headers = dict(reply.headers)
        if reply.content_type:
            response_headers["Content-Type"] = reply.content_type
        result: dict[str, Any] = {
            "id": step_id,
            "status": reply.status,
            "headers": response_headers,
        }
        if reply.stream is not None:
            result["body"] = base64.b64encode(reply.stream.read()).decode("ascii")
        elif reply.body:
            result["body"] = json.loads(reply.body)
        return result


def _batch_error(step_id: str, status: int, code: str, message: str) -> dict[str, Any]:
    error = GraphError(status, code, message)
    return {
        "id": step_id,
        "status": status,
        "headers": {"Content-Type": "application/json"},
        "body": error.body("-"),
    }


def _recipient(value: object) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        return None
    address = value.get("emailAddress")
    if not isinstance(address, dict):
        return None
    return (str(address.get("name") or ""), str(address.get("address") or ""))


def item_from_json(data: dict[str, Any]) -> Item:
    """An item attachment's item from Graph JSON (``@odata.type`` picks the kind)."""
    odata_type = str(data.get("@odata.type", "#microsoft.graph.message")).lower().lstrip("#")
    kind = odata_type.rsplit(".", 1)[-1]
    fields = {k: v for k, v in data.items() if not k.startswith("@")}
    if kind == "event":
        uid = f"{derive_seed(json.dumps(fields, sort_keys=True, default=str)):x}@emulator"
        return Item("event", fields, BytesContent(mime.event_to_ics(fields, uid)))
    if kind == "contact":
        return Item("contact", fields, BytesContent(mime.contact_to_vcard(fields)))
    if kind != "message":
        raise unknown_property(odata_type, "outlookItem")
    body: dict[str, Any] = fields["body"] if isinstance(fields.get("body"), dict) else {}
    received = time.time()
    if isinstance(fields.get("receivedDateTime"), str):
        received = parse_datetime(fields["receivedDateTime"])
    inner = Message(
        fields.get("subject") if isinstance(fields.get("subject"), str) else None,
        received,
        sender=_recipient(fields.get("from")),
        recipients=[r for r in map(_recipient, fields.get("toRecipients") or []) if r],
        internet_message_id=fields.get("internetMessageId"),
        body=str(body.get("content", "")),
        body_type="html" if str(body.get("contentType", "")).lower() == "html" else "text",
    )
    return Item("message", fields, BytesContent(mime.message_to_mime(inner)))

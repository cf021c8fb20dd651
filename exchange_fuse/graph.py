"""The Microsoft Graph mail client: folders, messages, attachments, delta, on trio.

Everything the mount asks of Graph goes through :class:`GraphClient`. It speaks HTTP/1.1
with keep-alive through ``httpx``, sends ``Prefer: IdType="ImmutableId"`` so ids survive
moves, percent-encodes every id in paths (ids contain ``/``, ``+`` and ``=``), follows
``@odata.nextLink`` as an opaque URL and parses JSON into the records of
:mod:`exchange_fuse.mail`; nothing above it sees JSON.

It is also the only place that retries. One :class:`trio.CapacityLimiter` keeps at most
``max_in_flight`` requests open at once (Outlook allows 4 per application), a streamed
download holding its slot until its body is read. Transient failures (429, 5xx, network
errors, timeouts, cut connections) are retried with ``stamina``: 429 and 503 wait for
``Retry-After``, the rest back off exponentially with jitter, within a bounded number of
attempts and a bounded time. A 401 gets one fresh token and one more try. A call that
still fails raises one of the typed errors below and logs one WARNING; each retry logs at
DEBUG only. A ``Retry-After`` longer than the retry budget (an exhausted mailbox budget)
pauses every request to that mailbox until it has passed: calls fail at once, without
adding to the server's count.

Errors (branch on the type, ``status`` and ``code``, never on ``message``)::

    GraphError
     ├── UnauthorizedError          401 even with a freshly fetched token
     ├── AccessDeniedError          403 ErrorAccessDenied: no consent or an access policy
     ├── MailboxUnavailableError    MailboxNotEnabledForRESTAPI, ErrorInvalidUser
     ├── NotFoundError              404 ErrorItemNotFound, ResourceNotFound
     ├── NotSupportedError          405, e.g. the content of a reference attachment
     ├── SyncStateExpiredError      410 SyncStateNotFound: start the delta again
     ├── BadResponseError           an answer Graph would not give (bad JSON, foreign link)
     ├── CertificateError           the server's TLS certificate is not trusted
     └── TransientError             worth retrying; raised once the retry budget is spent
          ├── ThrottledError        429
          │    └── HeldBackError    not sent: Graph's long Retry-After has not passed
          ├── ServiceUnavailableError  5xx
          └── TransportError        network error, cut connection, truncated body
               └── GraphTimeoutError   no answer within the request timeout

Token refusals from the identity platform surface as :class:`exchange_fuse.auth.AuthError`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import ssl
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlencode, urlsplit

import httpx
import stamina
import stamina.instrumentation
import trio

from exchange_fuse.auth import AuthUnavailableError, TokenProvider, ssl_context
from exchange_fuse.mail import (
    AttachmentId,
    AttachmentKind,
    AttachmentRecord,
    FolderId,
    FolderRecord,
    MailboxAddress,
    MessageId,
    MessageRecord,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Only what the namespace uses: a mount may hold hundreds of thousands of messages. The
# folder is the one listed; the web link is asked for when someone reads it.
_MESSAGE_FIELDS = "id,subject,receivedDateTime,from"
# Only the attachment base type's fields can be selected inside $expand; contentBytes
# is never fetched in a listing.
_ATTACHMENT_FIELDS = "id,name,contentType,size,isInline"
_ATTACHMENTS_EXPAND = f"attachments($select={_ATTACHMENT_FIELDS})"
# Graph takes at most 20 requests in one JSON batch.
_BATCH_SIZE = 20
# Messages parsed between checkpoints while the next page is on its way.
_PARSE_BATCH = 200
_FOLDER_FIELDS = "id,displayName,parentFolderId,childFolderCount,totalItemCount,isHidden"

_ATTACHMENT_KINDS = {
    "#microsoft.graph.fileattachment": AttachmentKind.FILE,
    "#microsoft.graph.itemattachment": AttachmentKind.ITEM,
    "#microsoft.graph.referenceattachment": AttachmentKind.REFERENCE,
}
_ITEM_TYPES = {
    "#microsoft.graph.message": "message",
    "#microsoft.graph.eventmessage": "message",
    "#microsoft.graph.eventmessagerequest": "message",
    "#microsoft.graph.eventmessageresponse": "message",
    "#microsoft.graph.post": "message",
    "#microsoft.graph.event": "event",
    "#microsoft.graph.contact": "contact",
}
_SEARCH_FOLDER_TYPE = "#microsoft.graph.mailsearchfolder"

_NOT_FOUND_CODES = frozenset({"erroritemnotfound", "resourcenotfound", "itemnotfound"})
_MAILBOX_CODES = frozenset({"mailboxnotenabledforrestapi", "errorinvaliduser"})
_ACCESS_DENIED_CODES = frozenset({"erroraccessdenied", "accessdenied"})
_SYNC_STATE_CODES = frozenset({"syncstatenotfound", "resyncrequired"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ERROR_BODY = 64 * 1024
_MAX_PAGES = 100_000  # a server that links pages in a circle must not keep us forever
_THROTTLE_WARNING_INTERVAL_S = 60.0
# Graph's longest throttling window is 10 minutes; a longer Retry-After is not believed.
_MAX_PAUSE_S = 600.0

# Kinds of malformed items already warned about (see _odd_answer), and how many kinds a
# server that makes up new ones may add.
_odd_answers_seen: set[str] = set()
_MAX_ODD_ANSWERS = 100


class GraphError(Exception):
    """Graph refused or failed a request.

    Attributes:
        status: the HTTP status, or None when no answer arrived.
        code: Graph's error code (``error.code``), e.g. ``ErrorItemNotFound``.
        message: Graph's error message, for people; never branch on it.
        request_id: Graph's ``request-id``, for Microsoft support.
        retry_after: seconds the server asked us to wait, if it did.
        attempts: how many times the request was sent before giving up.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        parts = [str(self.status) if self.status is not None else None, self.code]
        prefix = " ".join(part for part in parts if part)
        return f"{prefix}: {self.message}" if prefix else self.message


class UnauthorizedError(GraphError):
    """Graph rejected a freshly fetched token (401)."""


class AccessDeniedError(GraphError):
    """403: the app lacks Mail.ReadWrite with admin consent, or an access policy denies it."""

    hint = (
        "the application is not allowed to read this mailbox: grant it the Mail.ReadWrite "
        "application permission with admin consent, and check that no application access "
        "policy excludes the mailbox"
    )


class MailboxUnavailableError(GraphError):
    """The address has no Exchange Online mailbox Graph can reach."""

    hint = (
        "the mailbox cannot be reached through Graph: check the address, and that the "
        "mailbox is in Exchange Online (not on-premises)"
    )


class NotFoundError(GraphError):
    """The folder, message or attachment does not exist (any more)."""


class NotSupportedError(GraphError):
    """Graph does not support this request for this item (405)."""


class SyncStateExpiredError(GraphError):
    """The delta link expired (410); list the folder afresh and start a new delta."""


class BadResponseError(GraphError):
    """The answer is not what Graph sends: malformed JSON, wrong shape, a foreign link."""


class CertificateError(GraphError):
    """The server's TLS certificate is not trusted (check the CA bundle)."""


class TransientError(GraphError):
    """A failure that may go away by itself; raised only once retries are spent."""


class ThrottledError(TransientError):
    """429: Graph is throttling this application or mailbox."""


class HeldBackError(ThrottledError):
    """Not sent: Graph asked for a pause longer than the retry budget, still running."""


class ServiceUnavailableError(TransientError):
    """A 5xx answer."""


class TransportError(TransientError):
    """No complete answer: network error, cut connection, truncated body."""


class GraphTimeoutError(TransportError):
    """No answer within the request timeout."""


@dataclass
class GraphStats:
    """Counters for status reports (all since the client was created)."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    throttled: int = 0  # 429 answers
    server_errors: int = 0  # 5xx answers
    transport_errors: int = 0  # requests that got no complete answer
    token_refreshes: int = 0  # 401 answers that made us fetch a new token
    failures: int = 0  # calls that failed after all their retries
    bytes_downloaded: int = 0  # attachment content received
    in_flight: int = 0
    peak_in_flight: int = 0


@dataclass(frozen=True, slots=True)
class MessageDelta:
    """One round of a folder's message delta."""

    changed: tuple[MessageRecord, ...]  # new or changed messages, with the fields Graph gave
    removed: tuple[MessageId, ...]  # deleted or moved out of the folder
    delta_link: str  # pass back to get the changes after this round


@dataclass(frozen=True, slots=True)
class FolderDelta:
    """One round of the mailbox's folder delta."""

    changed: tuple[FolderRecord, ...]
    removed: tuple[FolderId, ...]
    delta_link: str


class Download:
    """An attachment's content, streamed; use through :meth:`GraphClient.download`.

    Attributes:
        content_length: the exact content length from ``Content-Length``, if sent.
        content_type: the ``Content-Type`` of the content, if sent.
    """

    def __init__(self, client: GraphClient, url: str, what: str) -> None:
        self._client = client
        self._url = url
        self._what = what
        self._stack: AsyncExitStack | None = None
        self._raw: AsyncIterator[bytes] | None = None
        self._started = False
        self._received = 0  # bytes of the current response's body
        self._delivered = 0  # bytes yielded to the consumer
        self.content_length: int | None = None
        self.content_type: str | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the content, in order, exactly once, resuming over cut connections.

        Content is immutable, so after a failure mid-body the request is sent again and
        the bytes already delivered are skipped. A total that disagrees with
        ``Content-Length`` is an error, never a short stream.
        """
        failures_without_progress = 0
        skip = 0
        while True:
            try:
                chunk = await self._next_raw()
            except TransientError as exc:
                failures_without_progress += 1
                if failures_without_progress >= self._client._retry_attempts:
                    self._client._give_up(self._what, exc, failures_without_progress)
                    raise
                log.debug(
                    "%s broke after %d bytes, resuming: %s", self._what, self._delivered, exc
                )
                await self._close()
                self._client.stats.retries += 1
                await self._client._retrying(self._what, self._open)
                skip = self._delivered
                continue
            if chunk is None:
                await self._close()
                return

            if skip:
                dropped = min(skip, len(chunk))
                skip -= dropped
                chunk = chunk[dropped:]
                if not chunk:
                    continue
            failures_without_progress = 0
            self._delivered += len(chunk)
            if self.content_length is not None and self._delivered > self.content_length:
                raise BadResponseError(
                    f"{self._what}: more content than Content-Length {self.content_length}"
                )
            yield chunk

    async def _next_raw(self) -> bytes | None:
        """The next piece of the body, None at its end; a short body is a TransportError."""
        if self._raw is None:
            raise TransportError(f"{self._what}: the response is closed")
        try:
            chunk = await anext(self._raw)
        except StopAsyncIteration:
            if self.content_length is not None and self._received < self.content_length:
                raise TransportError(
                    f"{self._what}: body ended after {self._received} of "
                    f"{self.content_length} bytes"
                ) from None
            return None
        except httpx.HTTPError as exc:
            self._client.stats.transport_errors += 1
            raise _transport_error(exc, self._what) from exc
        self._received += len(chunk)
        self._client.stats.bytes_downloaded += len(chunk)
        return chunk

    async def _open(self, attempt: int) -> None:
        """Send the request (again) and keep the response open; one attempt."""
        stack = AsyncExitStack()
        # Identity encoding, so Content-Length counts the very bytes that are delivered.
        response = await stack.enter_async_context(
            self._client._open(
                "GET", self._url, headers={"Accept-Encoding": "identity"}, read_body=False
            )
        )

        length = _content_length(response)
        if not self._started:
            self._started = True
            self.content_length = length
            self.content_type = response.headers.get("content-type")
        elif length != self.content_length:
            await stack.aclose()
            raise BadResponseError(f"{self._what}: content length changed to {length}")
        self._stack = stack
        self._raw = response.aiter_raw()
        self._received = 0

    async def _close(self) -> None:
        """Close the response and give back its limiter slot."""
        stack, self._stack = self._stack, None
        self._raw = None
        if stack is not None:
            await stack.aclose()


class GraphClient:
    """An application's view of Exchange Online mailboxes through Graph.

    Args:
        graph_url: the Graph root with its version, e.g. ``https://graph.microsoft.com/v1.0``.
        tokens: where access tokens come from.
        ca_bundle: a PEM file of CAs to trust instead of the system's.
        proxy: an HTTP(S) proxy URL.
        max_in_flight: requests open at once, whatever the number of callers.
        retry_attempts: attempts per call, the first one included.
        retry_timeout: seconds after which no new attempt starts. A call returns within
            about ``retry_timeout + request_timeout`` (a streamed body excepted).
        request_timeout: seconds to wait for an answer, or between two reads of a body.
        page_size: items per page in listings and deltas (Graph allows up to 1000).
        backoff_initial, backoff_max: the exponential backoff's first and longest wait
            (plus a random jitter of up to twice ``backoff_initial``).
    """

    def __init__(
        self,
        graph_url: str,
        tokens: TokenProvider,
        *,
        ca_bundle: str | None = None,
        proxy: str | None = None,
        max_in_flight: int = 4,
        retry_attempts: int = 10,
        retry_timeout: float = 45.0,
        request_timeout: float = 30.0,
        page_size: int = 1000,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        self._base = graph_url.rstrip("/")
        base = urlsplit(self._base)
        self._origin = (base.scheme, base.netloc.lower())
        self._tokens = tokens
        self._limiter = trio.CapacityLimiter(max_in_flight)
        self._retry_attempts = max(1, retry_attempts)
        self._retry_timeout = retry_timeout
        self._request_timeout = request_timeout
        self._page_size = max(1, min(page_size, 1000))
        self._message_fields = _MESSAGE_FIELDS
        self._delta_headers = {
            "Prefer": f'IdType="ImmutableId", odata.maxpagesize={self._page_size}'
        }
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._last_throttle_warning = -_THROTTLE_WARNING_INTERVAL_S
        # Mailbox -> trio time before which nothing is sent to it (a long Retry-After).
        self._paused_until: dict[str, float] = {}
        self._root_ids: dict[MailboxAddress, FolderId] = {}  # folder ids never change
        self.stats = GraphStats()

        self._http = httpx.AsyncClient(
            verify=ssl_context(ca_bundle),
            proxy=proxy,
            timeout=httpx.Timeout(request_timeout),
            limits=httpx.Limits(
                max_connections=max_in_flight * 2, max_keepalive_connections=max_in_flight
            ),
            follow_redirects=False,
        )

        # httpx logs every request at INFO, URL and all; keep it quiet unless asked for.
        for name in ("httpx", "httpcore"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        # stamina's default hook logs each retry at WARNING; retries are logged here at
        # DEBUG instead, and a final failure once at WARNING.
        stamina.instrumentation.set_on_retry_hooks(())

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Folders

    async def get_mailbox_root(self, mailbox: MailboxAddress) -> FolderRecord:
        """The mailbox's top folder (msgfolderroot); its parent_id is None."""
        url = self._url(mailbox, "mailFolders", "msgfolderroot")
        body = _as_dict(await self._call("GET", url, params={"$select": _FOLDER_FIELDS}), url)
        root = _parse_folder(body)
        if root is None:
            raise BadResponseError(f"{_path(url)}: the root folder has no id")
        self._root_ids[mailbox] = root.id
        return replace(root, parent_id=None)

    async def list_folder_tree(
        self, mailbox: MailboxAddress, *, include_hidden: bool = False
    ) -> list[FolderRecord]:
        """Every folder of the mailbox, parents before children, the root left out."""
        root_id = self._root_ids.get(mailbox) or (await self.get_mailbox_root(mailbox)).id
        params = {"$select": _FOLDER_FIELDS, "$top": str(self._page_size)}
        if include_hidden:
            params["includeHiddenFolders"] = "true"
        children: dict[FolderId, list[FolderRecord]] = {}
        seen = {root_id}

        async def walk(folder_id: FolderId, url: str) -> None:
            listed = [
                folder
                for folder in map(_parse_folder, await self._all_pages(url, params))
                if folder is not None and folder.id not in seen
            ]
            listed = [replace(folder, parent_id=folder_id) for folder in listed]
            seen.update(folder.id for folder in listed)
            children[folder_id] = listed
            for folder in listed:
                if folder.child_folder_count > 0:
                    child_url = self._url(mailbox, "mailFolders", folder.id, "childFolders")
                    nursery.start_soon(walk, folder.id, child_url)

        with _first_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(walk, root_id, self._url(mailbox, "mailFolders"))

        ordered: list[FolderRecord] = []
        stack = list(reversed(children.get(root_id, [])))
        while stack:
            folder = stack.pop()
            ordered.append(folder)
            stack.extend(reversed(children.get(folder.id, [])))
        log.debug("%s: %d folders", mailbox, len(ordered))
        return ordered

    async def folder_delta(
        self,
        mailbox: MailboxAddress,
        delta_link: str | None,
        *,
        first_page: dict[str, Any] | None = None,
    ) -> FolderDelta:
        """Changes to the mailbox's folders since ``delta_link`` (everything when None)."""
        url, params = self.folder_delta_request(mailbox, delta_link)
        changed: list[FolderRecord] = []
        removed: list[FolderId] = []

        def collect(item: dict[str, Any]) -> None:
            if "@removed" in item:
                if isinstance(item.get("id"), str):
                    removed.append(FolderId(item["id"]))
            elif (folder := _parse_folder(item)) is not None:
                changed.append(folder)

        link = await self._delta_rounds(url, params, collect, first_page)
        return FolderDelta(tuple(changed), tuple(removed), link)

    # Messages

    async def list_messages(
        self,
        mailbox: MailboxAddress,
        folder_id: FolderId,
        *,
        on_page: Callable[[list[MessageRecord]], Awaitable[None]] | None = None,
    ) -> list[MessageRecord]:
        """Every message in the folder, with its attachments (metadata only).

        ``on_page`` sees each page's messages while the next page is on its way.
        """
        url = self._url(mailbox, "mailFolders", folder_id, "messages")
        params = {
            "$select": self._message_fields,
            "$expand": _ATTACHMENTS_EXPAND,
            "$top": str(self._page_size),
        }
        messages: list[MessageRecord] = []

        async def parse(items: list[dict[str, Any]]) -> None:
            page: list[MessageRecord] = []
            for start in range(0, len(items), _PARSE_BATCH):
                for item in items[start : start + _PARSE_BATCH]:
                    if (message := _parse_message(item, folder_id)) is not None:
                        page.append(message)
                # Let the request for the next page go out while this one is parsed.
                await trio.lowlevel.checkpoint()
            messages.extend(page)
            if on_page is not None:
                await on_page(page)

        await self._each_page(url, params, parse)
        return await self._complete_attachments(mailbox, messages)

    def message_delta_request(
        self, mailbox: MailboxAddress, folder_id: FolderId, delta_link: str | None
    ) -> tuple[str, dict[str, str] | None]:
        """The URL and query of a message delta round's first request."""
        if delta_link is not None:
            return delta_link, None
        url = self._url(mailbox, "mailFolders", folder_id, "messages", "delta")
        return url, {"$select": self._message_fields, "$expand": _ATTACHMENTS_EXPAND}

    def folder_delta_request(
        self, mailbox: MailboxAddress, delta_link: str | None
    ) -> tuple[str, dict[str, str] | None]:
        """The URL and query of a folder delta round's first request."""
        if delta_link is not None:
            return delta_link, None
        return self._url(mailbox, "mailFolders", "delta"), {"$select": _FOLDER_FIELDS}

    async def message_delta(
        self,
        mailbox: MailboxAddress,
        folder_id: FolderId,
        delta_link: str | None,
        *,
        first_page: dict[str, Any] | None = None,
    ) -> MessageDelta:
        """Changes to the folder's messages since ``delta_link`` (everything when None).

        ``first_page`` is the answer to the round's first request, when already fetched
        (see ``batch``). Raises SyncStateExpiredError when the link has expired.
        """
        url, params = self.message_delta_request(mailbox, folder_id, delta_link)
        changed: list[MessageRecord] = []
        removed: list[MessageId] = []

        def collect(item: dict[str, Any]) -> None:
            if "@removed" in item:
                if isinstance(item.get("id"), str):
                    removed.append(MessageId(item["id"]))
            elif (message := _parse_message(item, folder_id)) is not None:
                changed.append(message)

        link = await self._delta_rounds(url, params, collect, first_page)
        completed = await self._complete_attachments(mailbox, changed)
        return MessageDelta(tuple(completed), tuple(removed), link)

    async def batch(
        self, requests: Sequence[tuple[str, dict[str, str] | None]]
    ) -> list[dict[str, Any] | GraphError]:
        """GET several URLs through JSON batching, up to 20 to a call: each JSON answer, or
        the typed error its own status gives.

        A sub-request that was throttled or failed on the server's side is sent again on
        its own, with the usual retries. Meant for polling: one call instead of twenty.
        """
        answers: list[dict[str, Any] | GraphError] = []
        for start in range(0, len(requests), _BATCH_SIZE):
            answers.extend(await self._batch_call(requests[start : start + _BATCH_SIZE]))
        return answers

    async def _batch_call(
        self, requests: Sequence[tuple[str, dict[str, str] | None]]
    ) -> list[dict[str, Any] | GraphError]:
        body = {
            "requests": [
                {
                    "id": str(index),
                    "method": "GET",
                    "url": self._relative(url, params),
                    "headers": {"Prefer": self._delta_headers["Prefer"]},
                }
                for index, (url, params) in enumerate(requests)
            ]
        }
        reply = _as_dict(
            await self._call("POST", f"{self._base}/$batch", json_body=body), "$batch"
        )
        by_id: dict[str, dict[str, Any]] = {}
        for response in reply.get("responses") or []:
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                by_id[response["id"]] = response

        answers: list[dict[str, Any] | GraphError] = []
        for index, (url, params) in enumerate(requests):
            response = by_id.get(str(index))
            status = response.get("status") if response else None
            answer = response.get("body") if response else None
            if isinstance(status, int) and status < 300 and isinstance(answer, dict):
                answers.append(answer)
                continue
            if isinstance(status, int) and status < 500 and status != 429:
                answers.append(_batch_error(status, answer, url))
                continue
            # Throttled, failed or missing: alone, with the usual retries.
            try:
                single = await self._call("GET", url, params=params, headers=self._delta_headers)
                answers.append(_as_dict(single, url))
            except GraphError as exc:
                answers.append(exc)
        return answers

    def _relative(self, url: str, params: dict[str, str] | None) -> str:
        """A URL as a batch sub-request names it: relative to the version root."""
        if not url.startswith(self._base):
            raise BadResponseError(f"{_path(url)}: not a Graph URL")
        relative = url[len(self._base) :]
        if params:
            relative += "?" + urlencode(params, quote_via=quote, safe="$,()=")
        return relative

    async def delete_message(self, mailbox: MailboxAddress, message_id: MessageId) -> None:
        """Delete the message (Graph puts it in Recoverable Items)."""
        url = self._url(mailbox, "messages", message_id)
        await self._call("DELETE", url, gone_on_retry_is_done=True)

    async def move_message(
        self, mailbox: MailboxAddress, message_id: MessageId, destination_folder_id: FolderId
    ) -> MessageId:
        """Move the message to another folder; returns its id there."""
        url = self._url(mailbox, "messages", message_id, "move")
        body = await self._call("POST", url, json_body={"destinationId": destination_folder_id})
        new_id = _as_dict(body, url).get("id")
        if not isinstance(new_id, str) or not new_id:
            raise BadResponseError(f"{_path(url)}: the moved message has no id")
        return MessageId(new_id)

    # Attachments

    async def list_attachments(
        self, mailbox: MailboxAddress, message_id: MessageId
    ) -> list[AttachmentRecord]:
        """The message's attachments as they are now (base fields; item_type not looked up)."""
        url = self._url(mailbox, "messages", message_id, "attachments")
        items = await self._all_pages(url, {"$select": _ATTACHMENT_FIELDS})
        return [record for item in items if (record := _parse_attachment(item)) is not None]

    def list_internet_message_ids(self) -> None:
        """Have listings carry each message's Internet Message-ID (a name template uses it)."""
        self._message_fields = f"{_MESSAGE_FIELDS},internetMessageId"

    async def message_details(
        self, mailbox: MailboxAddress, message_id: MessageId
    ) -> tuple[str | None, str | None]:
        """(web link, Internet Message-ID) of one message: what listings leave out."""
        url = self._url(mailbox, "messages", message_id)
        params = {"$select": "webLink,internetMessageId"}
        body = _as_dict(await self._call("GET", url, params=params), url)
        return _text(body.get("webLink")), _text(body.get("internetMessageId"))

    async def get_attachment(
        self,
        mailbox: MailboxAddress,
        message_id: MessageId,
        attachment_id: AttachmentId,
        *,
        expand_item: bool = True,
    ) -> AttachmentRecord:
        """One attachment with its kind's own fields: item type, reference link.

        Meant for item and reference attachments: a file attachment's answer carries its
        whole content (base64).
        """
        url = self._url(mailbox, "messages", message_id, "attachments", attachment_id)
        # The documented form: the attached item comes with its properties, and its
        # @odata.type says message, event or contact.
        params = {"$expand": "microsoft.graph.itemattachment/item"}
        body = _as_dict(await self._call("GET", url, params=params if expand_item else None), url)
        record = _parse_attachment(body)
        if record is None:
            raise BadResponseError(f"{_path(url)}: the attachment has no id")
        return record

    def download(
        self, mailbox: MailboxAddress, message_id: MessageId, attachment_id: AttachmentId
    ) -> AbstractAsyncContextManager[Download]:
        """Stream an attachment's content (``$value``).

        The request is sent on entry (so ``content_length`` is known) and holds a limiter
        slot until the body is read or the context exits. A reference attachment raises
        NotSupportedError; one that has gone raises NotFoundError.
        """
        url = self._url(mailbox, "messages", message_id, "attachments", attachment_id, "$value")
        return self._download(url)

    @asynccontextmanager
    async def _download(self, url: str) -> AsyncIterator[Download]:
        download = Download(self, url, f"GET {_path(url)}")
        try:
            await self._retrying(download._what, download._open)
            yield download
        finally:
            with trio.CancelScope(shield=True):
                await download._close()

    async def delete_attachment(
        self, mailbox: MailboxAddress, message_id: MessageId, attachment_id: AttachmentId
    ) -> None:
        """Remove one attachment from its message."""
        url = self._url(mailbox, "messages", message_id, "attachments", attachment_id)
        await self._call("DELETE", url, gone_on_retry_is_done=True)

    async def _complete_attachments(
        self, mailbox: MailboxAddress, messages: list[MessageRecord]
    ) -> list[MessageRecord]:
        """Look up what listings do not tell: the type of item attachments, reference links.

        One request per such attachment; they are rare.
        """
        wanted = [
            (index, position, attachment)
            for index, message in enumerate(messages)
            for position, attachment in enumerate(message.attachments)
            if attachment.kind in (AttachmentKind.ITEM, AttachmentKind.REFERENCE)
        ]
        if not wanted:
            return messages
        found: dict[tuple[int, int], AttachmentRecord] = {}

        async def look_up(index: int, position: int, attachment: AttachmentRecord) -> None:
            try:
                full = await self.get_attachment(
                    mailbox,
                    messages[index].id,
                    attachment.id,
                    expand_item=attachment.kind is AttachmentKind.ITEM,
                )
            except NotFoundError:
                return  # gone since the listing; the next listing will not show it
            found[index, position] = replace(
                attachment, item_type=full.item_type, source_url=full.source_url
            )

        with _first_error():
            async with trio.open_nursery() as nursery:
                for entry in wanted:
                    nursery.start_soon(look_up, *entry)

        completed = list(messages)
        for (index, position), attachment in found.items():
            message = completed[index]
            attachments = list(message.attachments)
            attachments[position] = attachment
            completed[index] = replace(message, attachments=tuple(attachments))
        return completed

    # Requests

    def _url(self, mailbox: MailboxAddress, *segments: str) -> str:
        """``/users/{mailbox}/...`` with every segment percent-encoded."""
        encoded = [quote(mailbox, safe="@")] + [quote(segment, safe="$") for segment in segments]
        return f"{self._base}/users/" + "/".join(encoded)

    def _check_link(self, link: object, origin_url: str) -> str:
        """A next or delta link, if it points back at Graph (it will carry our token)."""
        if not isinstance(link, str):
            raise BadResponseError(f"{_path(origin_url)}: a page link that is not a string")
        parts = urlsplit(link)
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            raise BadResponseError(f"{_path(origin_url)}: a page link to another server")
        return link

    async def _each_page(
        self,
        url: str,
        params: dict[str, str] | None,
        consume: Callable[[list[dict[str, Any]]], Awaitable[None]],
    ) -> None:
        """Feed the items of each page to ``consume``, asking for the next page first.

        Pages must be fetched one after the other (each names the next), but the work on
        one page can run while the next is on its way.
        """
        page = _as_dict(await self._call("GET", url, params=params), url)
        with _first_error():
            await self._follow_pages(url, page, consume)

    async def _follow_pages(
        self,
        url: str,
        page: dict[str, Any],
        consume: Callable[[list[dict[str, Any]]], Awaitable[None]],
    ) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(_MAX_PAGES):
                next_link = page.get("@odata.nextLink")
                arrived: list[Any] = []
                landed = trio.Event()
                if next_link is not None:
                    next_url = self._check_link(next_link, url)
                    nursery.start_soon(self._fetch_into, next_url, arrived, landed)
                await consume(list(_page_items(page, url)))
                if next_link is None:
                    return
                await landed.wait()
                url = next_url
                page = _as_dict(arrived[0], url)
        raise BadResponseError(f"{_path(url)}: more than {_MAX_PAGES} pages")

    async def _fetch_into(self, url: str, arrived: list[Any], landed: trio.Event) -> None:
        arrived.append(await self._call("GET", url))
        landed.set()

    async def _all_pages(self, url: str, params: dict[str, str] | None) -> list[dict[str, Any]]:
        """The items of a collection, following every ``@odata.nextLink``."""
        items: list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES):
            page = _as_dict(await self._call("GET", url, params=params), url)
            items.extend(_page_items(page, url))
            next_link = page.get("@odata.nextLink")
            if next_link is None:
                return items
            url, params = self._check_link(next_link, url), None
        raise BadResponseError(f"{_path(url)}: more than {_MAX_PAGES} pages")

    async def _delta_rounds(
        self,
        url: str,
        params: dict[str, str] | None,
        collect: Callable[[dict[str, Any]], None],
        first_page: dict[str, Any] | None = None,
    ) -> str:
        """Page through one delta round, feeding items to ``collect``; the new delta link.

        ``first_page`` is the round's first page when it was already fetched (in a batch).
        """
        headers = self._delta_headers
        for _ in range(_MAX_PAGES):
            if first_page is not None:
                page, first_page = first_page, None
            else:
                answer = await self._call("GET", url, params=params, headers=headers)
                page = _as_dict(answer, url)
            for item in _page_items(page, url):
                collect(item)
            if (delta_link := page.get("@odata.deltaLink")) is not None:
                return self._check_link(delta_link, url)
            next_link = page.get("@odata.nextLink")
            if next_link is None:
                raise BadResponseError(f"{_path(url)}: a delta page with neither link")
            url, params = self._check_link(next_link, url), None
        raise BadResponseError(f"{_path(url)}: more than {_MAX_PAGES} delta pages")

    async def _call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json_body: object = None,
        headers: dict[str, str] | None = None,
        gone_on_retry_is_done: bool = False,
    ) -> Any:
        """Send a request with retries; the decoded JSON body, or None when there is none.

        With ``gone_on_retry_is_done``, a 404 on a retry counts as success: the earlier
        attempt did the work but its answer was lost (a DELETE).
        """

        async def attempt(number: int) -> Any:
            try:
                async with self._open(
                    method, url, params=params, json_body=json_body, headers=headers
                ) as response:
                    return _decode_json(response, url)
            except NotFoundError:
                if gone_on_retry_is_done and number > 1:
                    log.debug("%s %s: gone on retry, taken as done", method, _path(url))
                    return None
                raise

        return await self._retrying(f"{method} {_path(url)}", attempt)

    async def _retrying(self, what: str, attempt: Callable[[int], Awaitable[T]]) -> T:
        """Run ``attempt(number)`` until it succeeds, fails for good or the budget is spent."""
        deadline = trio.current_time() + self._retry_timeout
        number = 0
        try:
            async for retry in stamina.retry_context(
                on=partial(self._retry_wait, what=what, deadline=deadline),
                attempts=self._retry_attempts,
                timeout=self._retry_timeout,
                wait_initial=self._backoff_initial,
                wait_max=self._backoff_max,
                wait_jitter=self._backoff_initial * 2,
            ):
                with retry:
                    number = retry.num
                    if number > 1:
                        self.stats.retries += 1
                    return await attempt(number)
        except TransientError as exc:
            self._give_up(what, exc, number)
            raise
        raise AssertionError("stamina ended without a result or an error")

    def _retry_wait(self, exc: Exception, *, what: str, deadline: float) -> bool | float:
        """The transient-error predicate: False, True (back off) or seconds to wait."""
        if not isinstance(exc, TransientError):
            return False
        log.debug("%s failed, may retry: %s", what, exc)
        if exc.retry_after is None:
            return True
        if trio.current_time() + exc.retry_after > deadline:
            return False  # the server's wait would outlast our budget
        return exc.retry_after

    def _give_up(self, what: str, exc: GraphError, attempts: int) -> None:
        exc.attempts = attempts
        self.stats.failures += 1
        if isinstance(exc, HeldBackError):
            # The pause was announced once when it began.
            log.debug("%s: %s", what, exc)
            return
        # The error names the request; ``what`` would only repeat it.
        log.warning("graph request failed after %d attempt(s), giving up: %s", attempts, exc)

    @asynccontextmanager
    async def _open(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json_body: object = None,
        headers: dict[str, str] | None = None,
        read_body: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """One attempt at a request: yields the response once its status is 2xx.

        Holds a limiter slot until the context exits. Without ``read_body`` only the
        headers have arrived, and the body streams under that slot. A 401 makes it fetch
        a new token and try once more.
        """
        self._check_pause(method, url)
        token = await self._access_token()
        for may_refresh in (True, False):
            async with self._slot():
                response = await self._send(
                    method, url, token, params, json_body, headers, read_body
                )
                try:
                    if response.is_success:
                        yield response
                        return
                    if response.status_code != 401 or not may_refresh:
                        raise self._error_from(response, method, url)
                finally:
                    await response.aclose()
            self.stats.token_refreshes += 1
            token = await self._refreshed_token(token)
        raise AssertionError("unreachable: the second 401 raises above")

    async def _send(
        self,
        method: str,
        url: str,
        token: str,
        params: dict[str, str] | None,
        json_body: object,
        headers: dict[str, str] | None,
        read_body: bool,
    ) -> httpx.Response:
        """Send one request (the caller holds a slot); the body is read unless streaming."""
        all_headers = {
            "Authorization": f"Bearer {token}",
            "Prefer": 'IdType="ImmutableId"',
            "Accept": "application/json",
            "client-request-id": str(uuid.uuid4()),
        }
        all_headers.update(headers or {})
        request = self._http.build_request(
            method, url, params=params, json=json_body, headers=all_headers
        )
        what = f"{method} {_path(url)}"
        self.stats.requests += 1
        started = trio.current_time()
        response: httpx.Response | None = None
        try:
            with trio.fail_after(self._request_timeout):
                response = await self._http.send(request, stream=True)
                if read_body or not response.is_success:
                    await response.aread()
        except trio.TooSlowError:
            if response is not None:
                await response.aclose()
            self.stats.transport_errors += 1
            raise GraphTimeoutError(f"{what}: no answer in {self._request_timeout:g}s") from None
        except httpx.HTTPError as exc:
            if response is not None:
                await response.aclose()
            self.stats.transport_errors += 1
            raise _transport_error(exc, what) from exc
        except BaseException:
            if response is not None:
                with trio.CancelScope(shield=True):
                    await response.aclose()
            raise

        log.debug(
            "%s -> %d in %.0f ms",
            what,
            response.status_code,
            (trio.current_time() - started) * 1000,
        )
        return response

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_in_flight`` slots (any task may close a stream it opened)."""
        borrower = object()
        await self._limiter.acquire_on_behalf_of(borrower)
        self.stats.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        try:
            yield
        finally:
            self.stats.in_flight -= 1
            self._limiter.release_on_behalf_of(borrower)

    def _check_pause(self, method: str, url: str) -> None:
        """Refuse to send while a pause Graph asked for, for this mailbox, still runs."""
        mailbox = _mailbox_of(url)
        until = self._paused_until.get(mailbox)
        if until is None:
            return
        remaining = until - trio.current_time()
        if remaining <= 0:
            del self._paused_until[mailbox]
            log.info("graph's pause for %s is over, sending requests again", mailbox or "graph")
            return
        raise HeldBackError(
            f"{method} {_path(url)}: not sent, graph asked to wait {remaining:.0f} s more",
            status=429,
            retry_after=remaining,
        )

    async def _access_token(self) -> str:
        try:
            return await self._tokens.token()
        except AuthUnavailableError as exc:
            raise TransportError(f"no access token: {exc.hint}") from exc

    async def _refreshed_token(self, rejected: str) -> str:
        try:
            return await self._tokens.refresh(rejected)
        except AuthUnavailableError as exc:
            raise TransportError(f"no access token: {exc.hint}") from exc

    def _error_from(self, response: httpx.Response, method: str, url: str) -> GraphError:
        """The typed error for a non-2xx answer (its body has been read)."""
        status = response.status_code
        code, message, inner_request_id = _error_body(response)
        retry_after = _retry_after(response.headers.get("retry-after"))
        request_id = response.headers.get("request-id") or inner_request_id
        text = f"{method} {_path(url)}: {message or response.reason_phrase}"
        kind = _error_class(status, code)
        if kind is ThrottledError:
            self.stats.throttled += 1
            now = trio.current_time()
            if retry_after is not None and retry_after > self._retry_timeout:
                mailbox = _mailbox_of(url)
                pause = min(retry_after, _MAX_PAUSE_S)
                if mailbox not in self._paused_until:
                    log.warning(
                        "graph asks for no requests to %s for %.0f s (%s); files not in the "
                        "cache cannot be read until then",
                        mailbox or "graph",
                        pause,
                        code,
                    )
                self._paused_until[mailbox] = now + pause
            elif now - self._last_throttle_warning >= _THROTTLE_WARNING_INTERVAL_S:
                self._last_throttle_warning = now
                log.warning(
                    "graph is throttling requests (%s, retry after %ss); slowing down",
                    code,
                    retry_after,
                )
        elif status >= 500:
            self.stats.server_errors += 1
        return kind(text, status=status, code=code, request_id=request_id, retry_after=retry_after)


def _batch_error(status: int, body: object, url: str) -> GraphError:
    """The typed error a batch sub-response stands for."""
    error = body.get("error") if isinstance(body, dict) else None
    code = _text(error.get("code")) if isinstance(error, dict) else None
    message = _text(error.get("message")) if isinstance(error, dict) else None
    kind = _error_class(status, code)
    return kind(f"GET {_path(url)}: {message or status}", status=status, code=code)


def _error_class(status: int, code: str | None) -> type[GraphError]:
    """Which error an answer is, by Graph's code first and the HTTP status second."""
    folded = (code or "").casefold()
    if folded in _MAILBOX_CODES:
        return MailboxUnavailableError
    if status == 410 or folded in _SYNC_STATE_CODES:
        return SyncStateExpiredError
    if status == 429:
        return ThrottledError
    if status >= 500:
        return ServiceUnavailableError
    if status == 404 or folded in _NOT_FOUND_CODES:
        return NotFoundError
    if status == 403 or folded in _ACCESS_DENIED_CODES:
        return AccessDeniedError
    if status == 401:
        return UnauthorizedError
    if status == 405:
        return NotSupportedError
    return GraphError


def _error_body(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    """(code, message, request-id) from ``{"error": {...}}``, whatever else came."""
    try:
        body = json.loads(response.content[:_MAX_ERROR_BODY])
    except ValueError:
        return None, None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    inner = error.get("innerError") or error.get("innererror")
    request_id = inner.get("request-id") if isinstance(inner, dict) else None
    return (
        _text(error.get("code")),
        _text(error.get("message")),
        _text(request_id),
    )


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _transport_error(exc: httpx.HTTPError, what: str) -> GraphError:
    """The typed error for an answer that did not (completely) arrive."""
    if isinstance(exc, httpx.TimeoutException):
        return GraphTimeoutError(f"{what}: timed out ({type(exc).__name__})")
    if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _causes(exc)):
        return CertificateError(f"{what}: the server's certificate is not trusted: {exc}")
    return TransportError(f"{what}: {type(exc).__name__}: {exc}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _decode_json(response: httpx.Response, url: str) -> Any:
    """The JSON body, None for an empty one; anything else is a BadResponseError."""
    if response.status_code == 204 or not response.content.strip():
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        raise BadResponseError(
            f"{_path(url)}: the answer is not JSON", status=response.status_code
        ) from None


def _as_dict(body: Any, url: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadResponseError(f"{_path(url)}: expected a JSON object")
    return body


def _page_items(page: dict[str, Any], url: str) -> Iterator[dict[str, Any]]:
    """The objects in a page's ``value`` (null counts as empty; non-objects are skipped)."""
    value = page.get("value", ())
    if value is None:
        return
    if not isinstance(value, list):
        raise BadResponseError(f"{_path(url)}: 'value' is not a list")
    for item in value:
        if isinstance(item, dict):
            yield item
        else:
            _odd_answer("a list item that is not an object", "skipped")


def _parse_folder(item: dict[str, Any]) -> FolderRecord | None:
    folder_id = _text(item.get("id"))
    if not folder_id:
        return None
    odata_type = (_text(item.get("@odata.type")) or "").casefold()
    parent_id = _text(item.get("parentFolderId"))
    return FolderRecord(
        id=FolderId(folder_id),
        parent_id=FolderId(parent_id) if parent_id else None,
        display_name=_text(item.get("displayName")) or "",
        child_folder_count=_count(item.get("childFolderCount")),
        total_item_count=_count(item.get("totalItemCount")),
        is_hidden=item.get("isHidden") is True,
        is_search_folder=odata_type == _SEARCH_FOLDER_TYPE,
    )


def _parse_message(item: dict[str, Any], folder_id: FolderId) -> MessageRecord | None:
    message_id = _text(item.get("id"))
    if not message_id:
        _odd_answer("a message without an id", "not shown")
        return None
    sender = item.get("from")
    address = sender.get("emailAddress") if isinstance(sender, dict) else None
    if isinstance(address, dict):
        # Few distinct senders across a mailbox: one string each.
        sender_text = _interned(_text(address.get("address")) or _text(address.get("name")))
    else:
        sender_text = None
    raw_attachments = item.get("attachments")
    attachments = (
        tuple(
            record
            for attachment in raw_attachments
            if isinstance(attachment, dict)
            and (record := _parse_attachment(attachment)) is not None
        )
        if isinstance(raw_attachments, list)
        else ()
    )
    parent_id = _text(item.get("parentFolderId"))
    return MessageRecord(
        id=MessageId(message_id),
        folder_id=FolderId(parent_id) if parent_id else folder_id,
        subject=_text(item.get("subject")),
        received=_timestamp(item.get("receivedDateTime")) or _EPOCH,
        sender=sender_text,
        internet_message_id=_text(item.get("internetMessageId")),
        web_link=_text(item.get("webLink")),
        attachments=attachments,
    )


def _parse_attachment(item: dict[str, Any]) -> AttachmentRecord | None:
    attachment_id = _text(item.get("id"))
    if not attachment_id:
        _odd_answer("an attachment without an id", "not shown")
        return None
    odata_type = (_text(item.get("@odata.type")) or "").casefold()
    kind = _ATTACHMENT_KINDS.get(odata_type)
    if kind is None:
        # An unknown or missing type is served as a file: $value gives its bytes or a
        # clear error, and nothing silently disappears.
        _odd_answer(f"attachment type {odata_type[:80]!r}", "served as a file attachment")
        kind = AttachmentKind.FILE
    item_type = None
    embedded = item.get("item")
    if kind is AttachmentKind.ITEM and isinstance(embedded, dict):
        item_type = _ITEM_TYPES.get((_text(embedded.get("@odata.type")) or "").casefold())
    return AttachmentRecord(
        id=AttachmentId(attachment_id),
        name=_text(item.get("name")),
        # A handful of distinct values across a mailbox: one string each, not one per file.
        content_type=_interned(_text(item.get("contentType"))),
        size_estimate=_count(item.get("size")),
        is_inline=item.get("isInline") is True,
        kind=kind,
        item_type=item_type,
        source_url=_text(item.get("sourceUrl")) if kind is AttachmentKind.REFERENCE else None,
    )


def _interned(text: str | None) -> str | None:
    return sys.intern(text) if text is not None else None


def _odd_answer(what: str, outcome: str) -> None:
    """Note an item Graph should not send: WARNING the first time, DEBUG afterwards.

    A listing is read again at every change, so one odd item would otherwise repeat its
    warning at every poll.
    """
    if what in _odd_answers_seen or len(_odd_answers_seen) >= _MAX_ODD_ANSWERS:
        log.debug("graph sent %s again: %s", what, outcome)
        return
    _odd_answers_seen.add(what)
    log.warning("graph sent %s: %s (later ones are logged at debug level)", what, outcome)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int:
    """A non-negative integer field; anything else counts as 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def _timestamp(value: object) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when no zone is given)."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _mailbox_of(url: str) -> str:
    """The mailbox a request is about (``/users/{mailbox}/...``), or "" for none."""
    segments = urlsplit(url).path.split("/")
    if "users" in segments[:-1]:
        return unquote(segments[segments.index("users") + 1]).casefold()
    return ""


def _path(url: str) -> str:
    """A URL without its query, for log lines (queries carry delta and skip tokens)."""
    return urlsplit(url).path


@contextmanager
def _first_error() -> Iterator[None]:
    """Let a nursery's first failure out as itself rather than inside an ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if leaves and all(isinstance(leaf, Exception) for leaf in leaves):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc

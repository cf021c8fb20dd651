"""Answers Graph should never give: the client must raise a typed error or use a default.

A small plain-HTTP server plays a Graph gone wrong (malformed JSON, odd fields, foreign
links, bodies cut short); tokens still come from the emulator through real MSAL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
import trio

from exchange_fuse import graph
from exchange_fuse.mail import AttachmentId, AttachmentKind, FolderId, MessageId
from tests.graph.conftest import MAILBOX, token_provider
from tests.support.emulator import Emulator

QUICK: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05}


@dataclass
class Canned:
    """One HTTP answer, possibly lying about its length."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    declared_length: int | None = None  # Content-Length to announce; len(body) when None

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Canned:
        return cls(json.dumps(value).encode(), status)

    def render(self) -> bytes:
        length = len(self.body) if self.declared_length is None else self.declared_length
        lines = [
            f"HTTP/1.1 {self.status} Canned",
            "Content-Type: application/json",
            f"Content-Length: {length}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


class CannedGraph:
    """Answers requests under ``/v1.0/users/{MAILBOX}`` from a table of paths."""

    def __init__(self) -> None:
        self.answers: dict[str, Canned] = {}
        self.requests: list[str] = []
        self.url = ""

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
            target = head.split(b" ", 2)[1].decode()
            path = target.split("?", 1)[0].removeprefix(f"/v1.0/users/{MAILBOX}")
            self.requests.append(path)
            answer = self.answers.get(path) or Canned.json(
                {"error": {"code": "ErrorItemNotFound", "message": "not here"}}, 404
            )
            await stream.send_all(answer.render())


@pytest.fixture
async def canned(nursery: trio.Nursery) -> CannedGraph:
    server = CannedGraph()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/v1.0"
    return server


@asynccontextmanager
async def client_for(
    canned: CannedGraph, emulator: Emulator, **options: Any
) -> AsyncIterator[graph.GraphClient]:
    tokens = token_provider(emulator)
    async with tokens, graph.GraphClient(canned.url, tokens, **QUICK, **options) as client:
        yield client


async def test_malformed_json_is_a_bad_response_and_not_retried(
    canned: CannedGraph, emulator: Emulator
) -> None:
    canned.answers["/mailFolders/msgfolderroot"] = Canned(b'{"id": "root", "displayName": ')
    async with client_for(canned, emulator) as client:
        with pytest.raises(graph.BadResponseError):
            await client.get_mailbox_root(MAILBOX)

    assert canned.requests == ["/mailFolders/msgfolderroot"]


async def test_missing_null_and_odd_fields_get_defaults(
    canned: CannedGraph, emulator: Emulator
) -> None:
    huge = "Ünïcode " * 2000
    canned.answers["/mailFolders/f1/messages"] = Canned.json(
        {
            "value": [
                {"subject": "no id, cannot be used"},
                "not an object",
                {
                    "id": "m1",
                    "subject": None,
                    "receivedDateTime": "yesterday-ish",
                    "from": "not an object",
                    "parentFolderId": None,
                    "attachments": [
                        {"id": "a1", "@odata.type": "#microsoft.graph.somethingNew"},
                        {
                            "id": "a2",
                            "@odata.type": "#microsoft.graph.fileAttachment",
                            "name": huge,
                            "size": "big",
                            "isInline": "yes",
                            "lastModifiedDateTime": 12,
                        },
                        {"name": "no id"},
                        None,
                    ],
                },
                {"id": "m2", "receivedDateTime": "2024-05-01T10:00:00.1234567Z"},
            ]
        }
    )
    async with client_for(canned, emulator) as client:
        messages = await client.list_messages(MAILBOX, FolderId("f1"))

    assert [m.id for m in messages] == ["m1", "m2"]
    odd, plain = messages
    assert odd.subject is None
    assert odd.sender is None
    assert odd.folder_id == "f1"
    assert odd.received == datetime(1970, 1, 1, tzinfo=UTC)
    unknown, named = odd.attachments
    assert unknown.kind is AttachmentKind.FILE  # served as bytes rather than hidden
    assert (unknown.name, unknown.size_estimate, unknown.is_inline) == (None, 0, False)
    assert named.name == huge
    assert (named.size_estimate, named.is_inline, named.last_modified) == (0, False, None)
    assert plain.received == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert plain.attachments == ()


async def test_a_page_link_to_another_server_is_refused(
    canned: CannedGraph, emulator: Emulator
) -> None:
    canned.answers["/mailFolders/f1/messages"] = Canned.json(
        {"value": [], "@odata.nextLink": "https://elsewhere.example/v1.0/steal?token=1"}
    )
    async with client_for(canned, emulator) as client:
        with pytest.raises(graph.BadResponseError):
            await client.list_messages(MAILBOX, FolderId("f1"))

    assert canned.requests == ["/mailFolders/f1/messages"]


async def test_a_delta_page_without_links_is_refused(
    canned: CannedGraph, emulator: Emulator
) -> None:
    canned.answers["/mailFolders/f1/messages/delta"] = Canned.json({"value": []})
    async with client_for(canned, emulator) as client:
        with pytest.raises(graph.BadResponseError):
            await client.message_delta(MAILBOX, FolderId("f1"), None)


async def test_a_truncated_listing_is_retried_then_a_transport_error(
    canned: CannedGraph, emulator: Emulator
) -> None:
    canned.answers["/mailFolders/msgfolderroot"] = Canned(b'{"id": "ro', declared_length=400)
    async with client_for(canned, emulator, retry_attempts=3) as client:
        with pytest.raises(graph.TransportError) as failed:
            await client.get_mailbox_root(MAILBOX)

    assert failed.value.attempts == 3
    assert len(canned.requests) == 3


async def test_a_download_cut_short_every_time_never_ends_silently(
    canned: CannedGraph, emulator: Emulator
) -> None:
    path = "/messages/m1/attachments/a1/$value"
    canned.answers[path] = Canned(b"x" * 500, declared_length=1000)
    received = bytearray()
    async with client_for(canned, emulator, retry_attempts=3) as client:
        with pytest.raises(graph.TransportError):
            async with client.download(MAILBOX, MessageId("m1"), AttachmentId("a1")) as d:
                assert d.content_length == 1000
                async for chunk in d.chunks():
                    received.extend(chunk)

    assert len(received) <= 500


async def test_an_error_page_that_is_not_json_still_gives_a_typed_error(
    canned: CannedGraph, emulator: Emulator
) -> None:
    canned.answers["/mailFolders/msgfolderroot"] = Canned(
        b"<html>Bad gateway</html>", status=502, headers={"Retry-After": "0"}
    )
    async with client_for(canned, emulator, retry_attempts=2) as client:
        with pytest.raises(graph.ServiceUnavailableError) as failed:
            await client.get_mailbox_root(MAILBOX)

    assert (failed.value.status, failed.value.code, failed.value.retry_after) == (502, None, 0.0)
    assert len(canned.requests) == 2


async def test_a_message_that_vanished_is_not_found(
    canned: CannedGraph, emulator: Emulator
) -> None:
    async with client_for(canned, emulator) as client:
        with pytest.raises(graph.NotFoundError) as missing:
            await client.list_attachments(MAILBOX, MessageId("gone"))

    assert (missing.value.status, missing.value.code) == (404, "ErrorItemNotFound")
    assert missing.value.attempts == 1

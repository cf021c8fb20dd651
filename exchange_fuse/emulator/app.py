"""The emulator's ASGI application: Graph, the token endpoints and the control API.

Graph requests (``/v1.0/...``) go through a thin ASGI layer of our own, because it must see
the raw path (ids carry encoded ``/``), hold a concurrency slot while a body streams, pace
the bytes (bandwidth) and cut connections mid-body. Everything else (OpenID discovery, the
token endpoint, ``/_emulator``) is a small Starlette application.
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exchange_fuse.emulator.auth import Authority, TokenError
from exchange_fuse.emulator.content import Content
from exchange_fuse.emulator.errors import GraphError
from exchange_fuse.emulator.faults import Limiter, Settings, Stats
from exchange_fuse.emulator.graph import Graph, GraphRequest, Reply, error_reply, split_path
from exchange_fuse.emulator.store import Store

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_REQUEST_BODY = 64 * 1024 * 1024


class Emulator:
    """The running emulator: its mailboxes, knobs, counters and the ASGI entry point."""

    def __init__(self, store: Store, settings: Settings, authority: Authority) -> None:
        self.store = store
        self.settings = settings
        self.initial_settings = copy.deepcopy(settings)
        self.authority = authority
        self.stats = Stats()
        self.limiter = Limiter(settings, self.stats)
        self.origin = ""
        self.graph: Graph | None = None
        self.control = self._control_app()

    def bind(self, origin: str) -> None:
        """Called once the port is known: URLs in responses need it."""
        self.origin = origin
        self.authority.accepted_scopes.add(f"{origin}/.default".lower())
        self.graph = Graph(self.store, self.settings, self.limiter, f"{origin}/v1.0")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if raw_path.startswith(b"/v1.0/") or raw_path == b"/v1.0":
            await self._graph(scope, receive, send, raw_path.decode("latin-1"))
        else:
            await self.control(scope, receive, send)

    # -- Graph ----------------------------------------------------------------------------

    async def _graph(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        assert self.graph is not None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = str(uuid.uuid4())
        headers["request-id"] = request_id
        client_request_id = headers.get("client-request-id")
        method = scope["method"]

        try:
            application = self.authority.check(headers.get("authorization"), method)
        except GraphError as error:
            self.stats.count(f"{method} (unauthenticated)", error.status)
            await self._send(
                send, receive, error_reply(error, request_id, client_request_id), headers
            )
            return
        try:
            self.limiter.enter(application)
        except GraphError as error:
            self.stats.count(f"{method} (over concurrency)", error.status)
            await self._send(
                send, receive, error_reply(error, request_id, client_request_id), headers
            )
            return

        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.limiter.leave(application)

        # The request stops counting as in flight as its last body bytes leave: by then the
        # client may already have them all and send its next request.
        send = _releasing_on_last_body(send, release)
        try:
            if self.settings.latency_ms:
                await trio.sleep(self.settings.latency_ms / 1000)
            try:
                body = await _read_body(receive)
            except GraphError as error:
                self.stats.count(f"{method} (body too large)", error.status)
                reply = error_reply(error, request_id, client_request_id)
                await self._send(send, receive, reply, headers)
                return
            request = GraphRequest(
                method=method,
                path=path,
                segments=split_path(path),
                raw_query=scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=body,
                application=application,
            )
            route, reply = self.graph.handle(request)
            if reply.status >= 400 and client_request_id and reply.body:
                reply = _with_client_request_id(reply, client_request_id)
            self.stats.count(route, reply.status)
            await self._send(send, receive, reply, headers)
        finally:
            release()

    async def _send(
        self, send: Send, receive: Receive, reply: Reply, headers: dict[str, str]
    ) -> None:
        request_id = headers["request-id"]
        out = [
            (b"request-id", request_id.encode()),
            (b"client-request-id", headers.get("client-request-id", request_id).encode("latin-1")),
            (b"odata-version", b"4.0"),
            (b"cache-control", b"private"),
        ]
        if reply.content_type:
            out.append((b"content-type", reply.content_type.encode()))
        for name, value in reply.headers.items():
            out.append((name.lower().encode(), value.encode("latin-1")))
        pacer = _Pacer(send, self.settings.bandwidth_bytes_per_s, self.stats)
        if reply.stream is None:
            out.append((b"content-length", str(len(reply.body)).encode()))
            await send({"type": "http.response.start", "status": reply.status, "headers": out})
            await pacer.body(reply.body, more=False)
            return

        content = reply.stream
        out.append((b"content-length", str(content.length).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        cut_at = None
        if content.length > 1 and self.limiter.should_cut():
            cut_at = self.limiter.random.randrange(1, content.length)
        completed = True
        async with trio.open_nursery() as nursery:
            # A client that goes away cancels the rest of the stream.
            nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
            completed = await self._stream(pacer, content, cut_at)
            nursery.cancel_scope.cancel()
        if not completed:
            # Returning without the rest of the body makes the server close the connection.
            self.stats.cut_responses += 1
            log.debug("cut a response after %s of %d bytes", cut_at, content.length)

    async def _stream(self, pacer: _Pacer, content: Content, cut_at: int | None) -> bool:
        sent = 0
        for chunk in content.chunks():
            if cut_at is not None and sent + len(chunk) >= cut_at:
                await pacer.body(chunk[: cut_at - sent], more=True)
                return False
            await pacer.body(chunk, more=True)
            sent += len(chunk)
        await pacer.body(b"", more=False)
        return True

    # -- tokens and control ---------------------------------------------------------------

    def _control_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery),
                Route("/{tenant}/.well-known/openid-configuration", self._discovery),
                Route("/{tenant}/discovery/v2.0/keys", self._keys),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/_emulator/faults", self._faults, methods=["GET", "POST"]),
                Route("/_emulator/faults/reset", self._reset_faults, methods=["POST"]),
                Route("/_emulator/stats", self._stats, methods=["GET", "DELETE"]),
                Route("/_emulator/tokens/revoke", self._revoke, methods=["POST"]),
                Route("/_emulator/delta/expire", self._expire_delta, methods=["POST"]),
                Route("/_emulator/health", self._health),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        try:
            body = self.authority.discovery(self.origin, request.path_params["tenant"])
        except TokenError as error:
            return JSONResponse(error.body(), status_code=error.status)
        return JSONResponse(body)

    async def _keys(self, request: Request) -> Response:
        return JSONResponse({"keys": []})

    async def _token(self, request: Request) -> Response:
        self.stats.token_requests += 1
        tenant = request.path_params["tenant"]
        form = {key: str(value) for key, value in (await request.form()).items()}
        endpoint = f"{self.origin}/{tenant}/oauth2/v2.0/token"
        try:
            body = self.authority.issue(tenant, form, endpoint, self.settings.token_lifetime_s)
        except TokenError as error:
            log.info("token request refused: %s (AADSTS%d)", error.error, error.code)
            return JSONResponse(error.body(), status_code=error.status)
        return JSONResponse(body, headers={"Cache-Control": "no-store, no-cache"})

    async def _faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object")
                seed_changed = "seed" in changes
                self.settings.update(changes)
            except ValueError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            if seed_changed:
                self.limiter.reseed()
            log.info("fault settings changed: %s", sorted(changes))
        return JSONResponse(self.settings.as_json())

    async def _reset_faults(self, request: Request) -> Response:
        for name in Settings.__slots__:
            setattr(self.settings, name, copy.deepcopy(getattr(self.initial_settings, name)))
        self.limiter.reseed()
        return JSONResponse(self.settings.as_json())

    async def _stats(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.stats.reset()
        return JSONResponse(self.stats.as_json(self.limiter.total_in_flight()))

    async def _revoke(self, request: Request) -> Response:
        return JSONResponse({"revoked": self.authority.revoke_all()})

    async def _expire_delta(self, request: Request) -> Response:
        assert self.graph is not None
        self.graph.sync_chains.expire_all()
        return JSONResponse({"expired": True})

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"mailboxes": self.store.addresses})


class _Pacer:
    """Sends body bytes, no faster than ``rate`` bytes per second when a rate is set."""

    def __init__(self, send: Send, rate: int, stats: Stats) -> None:
        self.send = send
        self.rate = rate
        self.stats = stats
        self.started = trio.current_time()
        self.sent = 0

    async def body(self, data: bytes, *, more: bool) -> None:
        if not self.rate or not data:
            if data or not more:
                await self.send({"type": "http.response.body", "body": data, "more_body": more})
            self.stats.bytes_sent += len(data)
            return
        step = max(1024, self.rate // 20)
        view = memoryview(data)
        for start in range(0, len(data), step):
            piece = bytes(view[start : start + step])
            last = start + step >= len(data)
            # A piece leaves when the link would have finished carrying it.
            self.sent += len(piece)
            delay = self.started + self.sent / self.rate - trio.current_time()
            if delay > 0:
                await trio.sleep(delay)
            await self.send(
                {"type": "http.response.body", "body": piece, "more_body": more or not last}
            )
            self.stats.bytes_sent += len(piece)


def _releasing_on_last_body(send: Send, release: Callable[[], None]) -> Send:
    """Wrap send to call release just before the response's last body bytes go out."""
    length: int | None = None
    sent = 0

    async def wrapped(message: MutableMapping[str, Any]) -> None:
        nonlocal length, sent
        if message["type"] == "http.response.start":
            for name, value in message.get("headers", []):
                if name == b"content-length":
                    length = int(value)
        elif message["type"] == "http.response.body":
            sent += len(message.get("body", b""))
            if not message.get("more_body", False) or (length is not None and sent >= length):
                release()
        await send(message)

    return wrapped


def _with_client_request_id(reply: Reply, client_request_id: str) -> Reply:
    try:
        data = json.loads(reply.body)
        data["error"]["innerError"]["client-request-id"] = client_request_id
    except (ValueError, KeyError, TypeError):
        return reply
    reply.body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return reply


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BODY:
            raise GraphError(413, "RequestEntityTooLarge", "The request body is too large.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

"""A Graph gone wrong: a proxy in front of the emulator that spoils chosen answers.

The mount talks to the proxy (HTTPS on loopback, with a certificate of its own CA) as if it
were Graph and the identity platform; the proxy forwards each request to the emulator and
passes the answer back, unless a rule claims it and hands back something else: malformed
JSON, items with fields missing or of the wrong type, unknown attachment types, a body
shorter than its ``Content-Length``.

The proxy stands for the whole service, sign-in included, because the mount asks for tokens
for ``<graph origin>/.default``: it swaps its own origin for the emulator's in requests
(the token request's scope) and the emulator's for its own in answers (links, the OpenID
document), so paging, delta and sign-in all keep going through it.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import trustme

from tests.support.emulator import Emulator

# Headers that describe one hop, or that the proxy sets itself.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "date",
        "server",
    }
)


@dataclass
class Answer:
    """An HTTP answer; ``declared_length`` may lie about the body's length."""

    status: int
    headers: dict[str, str]
    body: bytes
    declared_length: int | None = None


# A rule gets the request's method and decoded path and the emulator's answer; it returns
# the answer to send instead, or None to leave it alone.
Rule = Callable[[str, str, Answer], Answer | None]


def json_rule(path_suffix: str, edit: Callable[[Any], Any]) -> Rule:
    """Spoil the JSON answer of GET requests whose decoded path ends with path_suffix."""

    def rule(method: str, path: str, answer: Answer) -> Answer | None:
        if method != "GET" or not path.endswith(path_suffix) or answer.status != 200:
            return None
        edited = edit(json.loads(answer.body))
        body = edited if isinstance(edited, bytes) else json.dumps(edited).encode()
        return Answer(answer.status, answer.headers, body)

    return rule


def short_body_rule(path_suffix: str, missing: int) -> Rule:
    """Announce the real length of a download but close the connection ``missing`` bytes early."""

    def rule(method: str, path: str, answer: Answer) -> Answer | None:
        if method != "GET" or not path.endswith(path_suffix) or answer.status != 200:
            return None
        return Answer(answer.status, answer.headers, answer.body[:-missing], len(answer.body))

    return rule


@dataclass
class TamperingProxy:
    """Serves on ``graph_url`` and ``authority_url``; trust ``ca_bundle`` to reach it."""

    emulator: Emulator
    state_dir: Path
    rules: list[Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        upstream = urlsplit(self.emulator.graph_url)
        self._upstream_origin = f"{upstream.scheme}://{upstream.netloc}"
        self._client = httpx.Client(verify=self.emulator.ssl_context(), timeout=30)

        authority = trustme.CA(organization_name="exchange-fuse tampering proxy")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1").configure_cert(tls)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.origin = f"https://127.0.0.1:{self._server.server_address[1]}"
        self.graph_url = self.origin + upstream.path
        self.authority_url = self.origin + urlsplit(self.emulator.authority_url).path
        bundle = self.state_dir / "proxy-and-emulator-ca.pem"
        bundle.write_bytes(Path(self.emulator.ca_bundle).read_bytes() + authority.cert_pem.bytes())
        self.ca_bundle = str(bundle)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TamperingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        """Forward one request to the emulator and apply the first rule that claims it."""
        for ours, theirs in (
            (self.origin, self._upstream_origin),
            (quote(self.origin, safe=""), quote(self._upstream_origin, safe="")),
        ):
            body = body.replace(ours.encode(), theirs.encode())
        response = self._client.request(
            method, self._upstream_origin + target, headers=headers, content=body
        )
        kept = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
        content = response.content.replace(self._upstream_origin.encode(), self.origin.encode())
        answer = Answer(response.status_code, kept, content)
        path = unquote(urlsplit(target).path)
        for rule in list(self.rules):
            spoiled = rule(method, path, answer)
            if spoiled is not None:
                return spoiled
        return answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP_HEADERS and k.lower() != "host"
                }
                answer = proxy.answer(self.command, self.path, headers, body)
                declared = answer.declared_length
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header(
                    "Content-Length", str(len(answer.body) if declared is None else declared)
                )
                # Every answer closes its connection, so a short body ends where it ends.
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer.body)
                self.close_connection = True

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the emulator and the mount log what matters

        return Handler

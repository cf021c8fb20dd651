"""Download every attachment of one mail folder with the O365 package, as people do by hand.

This is the comparison script of the benchmarks. It runs in a virtualenv of its own that
holds only O365 and its dependencies (never the project's), and follows the pattern of the
O365 documentation: authenticate with client credentials, page through the folder's
messages, and for each message with attachments download them and save each to a file.

It is pointed at the Graph emulator through O365's own hooks: a protocol subclass for the
Graph URL, and ``Account.connection_constructor`` for a connection whose MSAL client uses
the emulator's authority (MSAL's instance discovery, which asks Microsoft about unknown
authorities, is turned off). Trust of the emulator's CA comes from ``REQUESTS_CA_BUNDLE``,
which requests and therefore MSAL and O365 read. Any attempt to resolve a host other than
the emulator's fails at once, so the script never reaches a Microsoft server.

Prints one JSON object: seconds, messages, files, bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from msal import ConfidentialClientApplication
from O365 import Account, FileSystemTokenBackend, MSGraphProtocol
from O365.connection import Connection

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def _confine_to(host: str) -> None:
    """Refuse name resolution of any host but the emulator's."""
    resolve = socket.getaddrinfo

    def only_emulator(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name not in (host, "localhost", "127.0.0.1"):
            raise OSError(f"refusing to contact {name}: only the emulator may be reached")
        return resolve(name, *args, **kwargs)

    socket.getaddrinfo = only_emulator  # type: ignore[assignment]


def _account(args: argparse.Namespace, secret: str, token_dir: Path) -> Account:
    parts = urlsplit(args.graph_url)
    protocol_url = f"{parts.scheme}://{parts.netloc}/"
    version = parts.path.strip("/")
    authority = args.authority_url

    class EmulatorProtocol(MSGraphProtocol):
        _protocol_url = protocol_url

    class EmulatorConnection(Connection):
        _msal_client: Any

        @property
        def msal_client(self) -> Any:
            if self._msal_client is None:
                self._msal_client = ConfidentialClientApplication(
                    client_id=self.auth[0],
                    client_credential=self.auth[1],
                    authority=authority,
                    token_cache=self.token_backend,
                    instance_discovery=False,
                    timeout=self.timeout,
                )
            return self._msal_client

    class EmulatorAccount(Account):
        connection_constructor = EmulatorConnection

    return EmulatorAccount(
        (args.client_id, secret),
        auth_flow_type="credentials",
        tenant_id=args.tenant,
        protocol=EmulatorProtocol(api_version=version),
        main_resource=args.mailbox,
        token_backend=FileSystemTokenBackend(token_path=token_dir, token_filename="token.json"),
        requests_delay=args.requests_delay,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph-url", required=True)
    parser.add_argument("--authority-url", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--mailbox", required=True)
    parser.add_argument("--folder", required=True, help="a folder directly under the Inbox")
    parser.add_argument("--destination", required=True, type=Path)
    parser.add_argument("--requests-delay", type=int, default=200, help="O365's default")
    args = parser.parse_args()
    secret = os.environ["O365_CLIENT_SECRET"]
    _confine_to(urlsplit(args.graph_url).hostname or "")
    args.destination.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as token_dir:
        account = _account(args, secret, Path(token_dir))
        if not account.authenticate(requested_scopes=[GRAPH_SCOPE]):
            print("authentication failed", file=sys.stderr)
            return 1

        started = time.perf_counter()
        inbox = account.mailbox().inbox_folder()
        folder = next(found for found in inbox.get_folders() if found.name == args.folder)
        messages = files = size = 0
        for message in folder.get_messages(limit=None):
            messages += 1
            if not message.has_attachments:
                continue
            message.attachments.download_attachments()
            for attachment in message.attachments:
                if attachment.save(args.destination):
                    files += 1
                    size += attachment.size
        seconds = time.perf_counter() - started

    print(json.dumps({"seconds": seconds, "messages": messages, "files": files, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

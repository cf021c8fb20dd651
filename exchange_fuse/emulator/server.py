"""Serving: TLS certificates, hypercorn on trio, ``emulator.json``, signals."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from exchange_fuse.emulator.app import Emulator
from exchange_fuse.emulator.tls import make_certificates

log = logging.getLogger(__name__)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so readers never see a partial file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


async def run(emulator: Emulator, state_dir: Path, port: int) -> None:
    """Serve until SIGTERM or SIGINT; ``emulator.json`` appears once requests are answered."""
    state_file = state_dir / "emulator.json"
    state_file.unlink(missing_ok=True)
    ca_path, cert_path, key_path = make_certificates(state_dir)

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile = str(cert_path)
    config.keyfile = str(key_path)
    config.alpn_protocols = ["http/1.1"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 30.0

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        app: Any = emulator  # an ASGI callable; hypercorn's type is narrower than ASGI's
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        origin = binds[0]
        emulator.bind(origin)
        credentials = emulator.authority.credentials
        state: dict[str, Any] = {
            "graph_url": f"{origin}/v1.0",
            "authority_url": f"{origin}/{credentials.tenant_id}",
            "tenant_id": credentials.tenant_id,
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
            "ca_bundle": str(ca_path),
            "control_url": f"{origin}/_emulator",
            "mailboxes": emulator.store.addresses,
        }
        text = json.dumps(state, indent=2, ensure_ascii=False) + "\n"
        write_atomically(state_file, text)
        sys.stdout.write(text)
        sys.stdout.flush()
        log.info("serving %d mailboxes at %s", len(state["mailboxes"]), state["graph_url"])

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("stopping on signal %d", signum)
                break
        stop.set()
    state_file.unlink(missing_ok=True)

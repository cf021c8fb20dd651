"""The systemd notify protocol: READY, STATUS, WATCHDOG and STOPPING.

Under a ``Type=notify`` unit systemd passes a datagram socket in ``$NOTIFY_SOCKET``; each
message is a few ``KEY=value`` lines. Outside systemd every call does nothing. The protocol
is one ``sendto`` per message, so it is spoken here directly rather than through a binding
to libsystemd, which would need a compiler and headers on every machine.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environment: Mapping[str, str] = os.environ) -> None:
        address = environment.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        watchdog_usec = environment.get("WATCHDOG_USEC", "")
        watchdog_pid = environment.get("WATCHDOG_PID", "")
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval: float | None = (
            int(watchdog_usec) / 1e6 / 2 if watchdog_usec.isdigit() and for_us else None
        )

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=unmounting")

    def _send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

"""The bounds: the plainest programs that do the same work as the mount, timed the same way.

- ``list_folder``: a plain httpx loop paging a folder's messages with ``$top=1000`` and the
  same ``$select`` and ``$expand`` as the mount, following ``@odata.nextLink``.
- ``download_all``: a plain downloader keeping 4 ``$value`` requests in flight (the Outlook
  limit) and writing each attachment to a local file.
- ``stat_all``: ``os.stat`` of a list of paths, used on tmpfs and on the mount alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from tests.support.emulator import Emulator

from .rig import enc

# The same fields the mount asks for, so both read answers of the same size.
MESSAGE_FIELDS = (
    "id,subject,receivedDateTime,from,internetMessageId,webLink,changeKey,parentFolderId"
)
ATTACHMENTS_EXPAND = "attachments($select=id,name,contentType,size,isInline,lastModifiedDateTime)"
IMMUTABLE_IDS = {"Prefer": 'IdType="ImmutableId"'}
IN_FLIGHT = 4
_CONCURRENCY_RETRY = 0.005


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    message_id: str
    attachment_id: str
    name: str
    size_estimate: int


@dataclass(frozen=True, slots=True)
class Listing:
    seconds: float
    requests: int
    messages: int
    attachments: list[AttachmentRef]


@dataclass(frozen=True, slots=True)
class Downloaded:
    seconds: float
    files: int
    bytes: int
    # Requests answered 429 because the previous one still counted as in flight.
    refused: int


def list_folder(emulator: Emulator, mailbox: str, folder_id: str) -> Listing:
    """Every message of a folder with its attachments listed; timed without the token."""
    url: str | None = (
        f"/users/{enc(mailbox)}/mailFolders/{enc(folder_id)}/messages"
        f"?$top=1000&$select={MESSAGE_FIELDS}&$expand={ATTACHMENTS_EXPAND}"
    )
    attachments: list[AttachmentRef] = []
    messages = requests = 0
    with emulator.client(headers=IMMUTABLE_IDS, timeout=120.0) as client:
        started = time.perf_counter()
        while url:
            response = client.get(url)
            response.raise_for_status()
            requests += 1
            page = response.json()
            for message in page["value"]:
                messages += 1
                for attachment in message.get("attachments") or ():
                    if attachment.get("isInline"):
                        continue
                    attachments.append(
                        AttachmentRef(
                            message["id"],
                            attachment["id"],
                            attachment.get("name") or "",
                            int(attachment.get("size") or 0),
                        )
                    )
            url = page.get("@odata.nextLink")
        seconds = time.perf_counter() - started
    return Listing(seconds, requests, messages, attachments)


def download_all(
    emulator: Emulator,
    mailbox: str,
    attachments: Sequence[AttachmentRef],
    destination: Path,
    in_flight: int = IN_FLIGHT,
) -> Downloaded:
    """Download every attachment's ``$value`` into ``destination``, ``in_flight`` at a time."""
    destination.mkdir(parents=True, exist_ok=True)
    return trio.run(_download_all, emulator, mailbox, list(attachments), destination, in_flight)


async def _download_all(
    emulator: Emulator,
    mailbox: str,
    attachments: list[AttachmentRef],
    destination: Path,
    in_flight: int,
) -> Downloaded:
    pending = list(enumerate(attachments))
    pending.reverse()
    total = [0]
    refused = [0]

    async def worker(client: httpx.AsyncClient) -> None:
        while pending:
            index, attachment = pending.pop()
            url = (
                f"/users/{enc(mailbox)}/messages/{enc(attachment.message_id)}"
                f"/attachments/{enc(attachment.attachment_id)}/$value"
            )
            path = destination / f"{index:06d}"
            while True:
                async with client.stream("GET", url) as response:
                    if response.status_code == 429:
                        # Outlook counts a request in flight until its handler ends, a
                        # moment after the client has read the whole body: the next request
                        # can arrive first. That 429 is not time-based; try again at once.
                        refused[0] += 1
                        await trio.sleep(_CONCURRENCY_RETRY)
                        continue
                    response.raise_for_status()
                    with open(path, "wb") as file:
                        async for chunk in response.aiter_raw():
                            file.write(chunk)
                            total[0] += len(chunk)
                    break

    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with emulator.async_client(headers=IMMUTABLE_IDS, limits=limits) as client:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(worker, client)
        seconds = time.perf_counter() - started
    return Downloaded(seconds, len(attachments), total[0], refused[0])


def stat_all(paths: Sequence[str]) -> float:
    """Seconds to ``os.stat`` every path."""
    started = time.perf_counter()
    for path in paths:
        os.stat(path)
    return time.perf_counter() - started


def make_tmpfs_files(directory: Path, names: Sequence[str], sizes: Sequence[int]) -> None:
    """As many files, with the same names and sizes, in a directory on tmpfs."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, size in zip(names, sizes, strict=True):
        with open(directory / name, "wb") as file:
            file.truncate(size)

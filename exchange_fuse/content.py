"""Attachment content: exact sizes and reads, each attachment downloaded at most once.

Sits between the filesystem and the cache and Graph client. A download streams the
attachment's ``$value`` into a cache fill; readers are served from the fill while it runs and
from the cached file afterwards. Concurrent readers of one attachment share one download.

Graph's ``size`` is larger than the content, so the exact size is learnt from the download:
the ``Content-Length`` of ``$value``, or the byte count once it ends. Asking for the size of
an attachment therefore starts its download, which the read that usually follows (cp,
rsync) then reuses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from . import naming
from .cache import CachedEntry, ContentCache, ContentReader, Fill
from .graph import GraphClient
from .mail import AttachmentKind
from .tree import FileNode

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Download:
    key: str
    fill: Fill | None = None
    size: int | None = None
    error: BaseException | None = None
    size_known: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


class ContentHandle:
    """An open attachment: reads come from the cache, or from a download still running."""

    def __init__(self, service: ContentService, file: FileNode) -> None:
        self._service = service
        self.file = file
        self._reader: ContentReader | None = None
        self._download: _Download | None = None

    async def read(self, offset: int, size: int) -> bytes:
        if self._reader is None:
            entry = self._service.cache.get(self.file.key)
            if entry is not None:
                self._reader = entry.open()
        if self._reader is not None:
            return self._reader.read(offset, size)

        if self._download is None or self._download.done.is_set():
            if self._download is not None and self._download.error is not None:
                # The kernel reads again after an error; a download per retry would spend
                # Graph's retry budget again each time. Opening the file again tries anew.
                raise self._download.error
            self._download = self._service.start_download(self.file)
        download = self._download
        await download.size_known.wait()
        if download.error is not None:
            raise download.error
        assert download.fill is not None
        return await download.fill.read(offset, size)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class ContentService:
    """Starts and tracks downloads; runs them in a nursery of its own."""

    def __init__(self, graph: GraphClient, cache: ContentCache) -> None:
        self.graph = graph
        self.cache = cache
        self._downloads: dict[str, _Download] = {}
        self._nursery: trio.Nursery | None = None
        self.bytes_downloaded = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve downloads until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def known_size(self, file: FileNode) -> int | None:
        if file.size is None:
            file.size = self.cache.known_size(file.key)
        return file.size

    async def exact_size(self, file: FileNode) -> int:
        """The attachment's exact length, downloading it if that is the only way to know."""
        size = self.known_size(file)
        if size is not None:
            return size
        download = self.start_download(file)
        await download.size_known.wait()
        if download.error is not None:
            raise download.error
        assert download.size is not None
        return download.size

    def open(self, file: FileNode) -> ContentHandle:
        return ContentHandle(self, file)

    def start_download(self, file: FileNode) -> _Download:
        """The running download of this attachment, started if there is none."""
        running = self._downloads.get(file.key)
        if running is not None:
            return running
        assert self._nursery is not None, "ContentService.run() is not running"
        download = _Download(file.key)
        self._downloads[file.key] = download
        self._nursery.start_soon(self._download, file, download)
        return download

    def forget(self, file: FileNode) -> None:
        """The attachment is gone: drop its cached content."""
        self.cache.remove(file.key)

    async def _download(self, file: FileNode, download: _Download) -> None:
        try:
            if file.attachment.kind is AttachmentKind.REFERENCE:
                await self._store_shortcut(file, download)
            else:
                await self._stream(file, download)
        except BaseException as exc:
            # Cancellation too: a fill left running would block every later download.
            download.error = exc
            if download.fill is not None:
                download.fill.fail(exc)
            if not isinstance(exc, Exception):
                raise
            log.debug("download of %s failed: %r", file.name, exc)
        finally:
            download.size_known.set()
            download.done.set()
            del self._downloads[download.key]

    async def _stream(self, file: FileNode, download: _Download) -> None:
        async with self.graph.download(
            file.mailbox, file.message.id, file.attachment.id
        ) as response:
            fill = self.cache.begin_fill(file.key, response.content_length)
            download.fill = fill
            if response.content_length is not None:
                self._size_learnt(file, download, response.content_length)
            async for chunk in response.chunks():
                await fill.write(chunk)
                self.bytes_downloaded += len(chunk)
            entry = await fill.finish()
        self._size_learnt(file, download, entry.size)

    async def _store_shortcut(self, file: FileNode, download: _Download) -> None:
        url = file.attachment.source_url or ""
        body = naming.reference_shortcut(url)
        fill = self.cache.begin_fill(file.key, len(body))
        download.fill = fill
        await fill.write(body)
        entry: CachedEntry = await fill.finish()
        self._size_learnt(file, download, entry.size)

    @staticmethod
    def _size_learnt(file: FileNode, download: _Download, size: int) -> None:
        file.size = size
        download.size = size
        download.size_known.set()

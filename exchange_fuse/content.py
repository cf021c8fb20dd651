"""Attachment content: exact sizes and reads, each attachment downloaded at most once.

Sits between the filesystem and the cache and Graph client. A download streams the
attachment's ``$value`` into a cache fill; readers are served from the fill while it runs and
from the cached file afterwards. Concurrent readers of one attachment share one download.

Graph's ``size`` is larger than the content, so the exact size is learnt from the download:
the ``Content-Length`` of ``$value``, or the byte count once it ends. Asking for the size of
an attachment therefore starts its download, which the read that usually follows (cp,
rsync) then reuses.

cp and rsync read one file at a time, which would keep one of Graph's four request slots
busy. So when a file is opened or its size is asked for, the files listed after it are
downloaded ahead, a few at a time, within a byte budget and a share of the cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from . import naming
from .cache import CachedEntry, ContentCache, ContentReader, Fill
from .graph import GraphClient
from .mail import AttachmentKind
from .tree import FileNode, Namespace

log = logging.getLogger(__name__)

# How many files after the one being read are downloaded ahead, and how many at once. All
# four of Graph's request slots may read ahead: the file a tool reads next is normally among
# them, and the Graph client's limiter serves waiting requests in turn.
READ_AHEAD_FILES = 8
READ_AHEAD_DOWNLOADS = 4
# Estimated bytes downloading ahead at any time, at most, and at most this share of the cache.
READ_AHEAD_BYTES = 64 * 1024 * 1024
READ_AHEAD_CACHE_SHARE = 0.25
# After a download ahead failed, none is started for this long.
READ_AHEAD_PAUSE_S = 30.0


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

    async def read(self, offset: int, size: int) -> bytes | memoryview:
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

    def __init__(
        self, graph: GraphClient, cache: ContentCache, namespace: Namespace | None = None
    ) -> None:
        self.graph = graph
        self.cache = cache
        self._namespace = namespace
        self._downloads: dict[str, _Download] = {}
        self._nursery: trio.Nursery | None = None
        self.bytes_downloaded = 0
        self._ahead_send, self._ahead_receive = trio.open_memory_channel[FileNode](
            READ_AHEAD_FILES * READ_AHEAD_DOWNLOADS
        )
        self._ahead_queued: set[str] = set()
        self._ahead_bytes = 0
        self._ahead_quiet_until = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve downloads until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(READ_AHEAD_DOWNLOADS):
                nursery.start_soon(self._read_ahead_worker)
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
        self.read_ahead(file)
        return download.size

    def open(self, file: FileNode) -> ContentHandle:
        self.read_ahead(file)
        return ContentHandle(self, file)

    def read_ahead(self, file: FileNode) -> None:
        """Queue the files listed after this one for downloading ahead of the reader.

        Called only once this file's own download answered, so a failing Graph is not
        asked for more on speculation.
        """
        if self._namespace is None or trio.current_time() < self._ahead_quiet_until:
            return
        for follower in self._namespace.following(file, READ_AHEAD_FILES):
            key = follower.key
            if key in self._ahead_queued or key in self._downloads:
                continue
            if self.known_size(follower) is not None and self.cache.get(key) is not None:
                continue
            try:
                self._ahead_send.send_nowait(follower)
            except trio.WouldBlock:
                return  # far enough ahead already
            self._ahead_queued.add(key)

    async def _read_ahead_worker(self) -> None:
        async for file in self._ahead_receive:
            self._ahead_queued.discard(file.key)
            estimate = file.attachment.size_estimate
            budget = min(READ_AHEAD_BYTES, self.cache.max_bytes * READ_AHEAD_CACHE_SHARE)
            if self._ahead_bytes + estimate > budget:
                continue  # too big to fetch on speculation: the reader will ask for it
            if self.cache.get(file.key) is not None:
                continue
            if trio.current_time() < self._ahead_quiet_until:
                continue
            self._ahead_bytes += estimate
            try:
                download = self.start_download(file)
                await download.done.wait()
            finally:
                self._ahead_bytes -= estimate
            if download.error is not None:
                # Graph is struggling: stop speculating for a while, readers come first.
                self._ahead_quiet_until = trio.current_time() + READ_AHEAD_PAUSE_S

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

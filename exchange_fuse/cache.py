"""On-disk cache of attachment content: streaming fills, exact sizes, LRU eviction.

A read of an attachment that is not cached yet starts a *fill*: the downloader writes the
bytes into a partial file while readers wait for the ranges they asked for, so the first
bytes reach the reader while the rest is still downloading. When the download ends with the
expected number of bytes, the file is renamed into place and later reads are served from
it without any network traffic.

Layout under the cache directory (mode 0700, files 0600)::

    lock                      held (flock) while a cache uses the directory
    CACHEDIR.TAG              tells backup tools to skip the directory
    partial/<hash>.<random>   fills in progress; deleted at start-up
    entries/<hh>/<hash>.<n>   complete content of <n> bytes

``<hash>`` is the SHA-256 of the caller's key in hex and ``<hh>`` its first two digits; no
id ever appears in a file name.

Rules the code keeps:

- A file under ``entries/`` is always complete: it is written under ``partial/`` and only
  renamed into place once its length matches the expected length. Publishing does not
  fsync (a crash of the process loses nothing; a crash of the machine may lose recent
  content), and the length in the name lets start-up drop an entry that the file system
  truncated in a power loss.
- ``used_bytes`` counts complete entries plus what running fills have written or announced.
  Room is made by deleting least recently used entries, never one an open reader holds and
  never a running fill. Recency is the file's mtime, so it survives a restart.
- An entry larger than ``max_bytes`` is still downloaded, served and published; the cache
  is then over its limit until that entry is the least recently used one nobody reads and
  room is needed again, which deletes it.
- Removing or evicting an entry unlinks its file at once. Readers that have it open keep
  reading through their file descriptor (Linux keeps an unlinked file until its last close);
  the space is freed on that close and is no longer counted in ``used_bytes``.

Reads of complete entries are one ``os.pread`` on a file descriptor kept open by the reader.
Writes are plain ``os.pwrite`` calls on the trio thread, in pieces of at most 1 MiB with a
checkpoint between pieces: writing to the page cache is faster than handing each piece to a
worker thread. The cache is not thread-safe; only ``ContentReader.read`` may run in a worker
thread. Waits in ``Fill.read`` have no timeout of their own: callers bound them.

Errors: ``IncompleteContentError`` (a download shorter or longer than announced, or stopped),
``CacheInUseError`` (the directory is locked by another cache), and ``OSError`` from the disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import re
import secrets
import shutil
import stat
import weakref
from collections import OrderedDict
from pathlib import Path
from types import TracebackType

import trio

log = logging.getLogger(__name__)

_WRITE_PIECE = 1 << 20
_ENTRY_NAME = re.compile(r"([0-9a-f]{64})\.([0-9]+)")
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This directory holds the exchange-fuse attachment cache.\n"
    "# Its content can be downloaded again; backup tools may skip it.\n"
)


class IncompleteContentError(Exception):
    """The download did not deliver exactly the expected content; nothing was cached."""

    def __init__(self, message: str, expected: int | None, received: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.received = received


class CacheInUseError(Exception):
    """Another running cache holds the same directory."""


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class _Record:
    """What the cache knows about one complete file under ``entries/``."""

    __slots__ = ("name", "path", "readers", "removed", "size")

    def __init__(self, name: str, path: Path, size: int) -> None:
        self.name = name
        self.path = path
        self.size = size
        # Open file descriptors on this file; a record with readers is never evicted.
        self.readers = 0
        # Set once the file is unlinked (evicted, removed or replaced).
        self.removed = False


def _release(fd: int, record: _Record) -> None:
    os.close(fd)
    record.readers -= 1


class ContentReader:
    """Random access to one complete entry through a file descriptor kept open.

    While the reader is open its entry is not evicted, and if the entry is removed the
    reader still returns the content it opened.
    """

    def __init__(self, fd: int, record: _Record) -> None:
        self._fd = fd
        self._record = record
        self.size = record.size
        self._map: mmap.mmap | None = None

    def read(self, offset: int, size: int) -> bytes | memoryview:
        """Return up to ``size`` bytes at ``offset``; short only at the end of the content.

        The bytes are a view of the file mapped into memory: no copy is made here, the
        kernel copies them once into its reply.
        """
        if self._map is None:
            # After close the descriptor is -1, so a late read fails with EBADF instead of
            # reading whatever file reused the number.
            if self.size == 0 or self._fd < 0:
                return os.pread(self._fd, size, offset)
            self._map = mmap.mmap(
                self._fd, self.size, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ
            )
        return memoryview(self._map)[offset : offset + size]

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still out: freed with it
                self._map.close()
            self._map = None
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            _release(fd, self._record)

    def __enter__(self) -> ContentReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class CachedEntry:
    """A complete attachment content in the cache."""

    __slots__ = ("_record", "key")

    def __init__(self, key: str, record: _Record) -> None:
        self.key = key
        self._record = record

    @property
    def size(self) -> int:
        return self._record.size

    def open(self) -> ContentReader:
        """Open the content for reading; the entry is not evicted until the reader closes.

        Raises ``FileNotFoundError`` when the entry was removed or evicted since it was
        handed out.
        """
        if self._record.removed:
            raise FileNotFoundError(errno.ENOENT, "cache entry was removed")
        fd = os.open(self._record.path, os.O_RDONLY | os.O_CLOEXEC)
        self._record.readers += 1
        return ContentReader(fd, self._record)

    def __repr__(self) -> str:
        return f"<CachedEntry {self._record.name[:12]} size={self._record.size}>"


class Fill:
    """One download being written into the cache, readable while it runs.

    The downloader calls ``write`` for each chunk, then ``finish``, or ``fail`` on any
    error; using the fill as a context manager calls ``fail`` for it when the block ends
    by an exception or without ``finish``. Any number of tasks may ``read`` meanwhile.

    After ``finish`` the fill keeps its file descriptor, and its entry stays pinned, so
    reads through it keep working; both are released when the last reference to the fill
    goes. Drop fills once finished and open new readers through ``ContentCache.get``.
    """

    def __init__(
        self,
        cache: ContentCache,
        key: str,
        name: str,
        temp_path: Path,
        fd: int,
        expected_length: int | None,
    ) -> None:
        self.key = key
        self._cache = cache
        self._name = name
        self._temp_path = temp_path
        self._fd = fd
        self._expected_length = expected_length
        self._written = 0
        # Bytes counted in the cache's used_bytes for this fill.
        self._reserved = 0
        self._finished = False
        self._error: BaseException | None = None
        # Set by ContentCache.remove: the content must not be published.
        self._detached = False
        # trio.Event cannot be cleared, so each write sets the current one and replaces it.
        self._progress = trio.Event()
        self._length_known = trio.Event()
        if expected_length is not None:
            self._length_known.set()

    @property
    def written(self) -> int:
        return self._written

    @property
    def expected_length(self) -> int | None:
        return self._expected_length

    @expected_length.setter
    def expected_length(self, value: int | None) -> None:
        if not self.running:
            raise RuntimeError("the fill is no longer running")
        if value is not None and value < 0:
            raise ValueError(f"negative length {value}")
        self._expected_length = value
        if value is not None:
            self._length_known.set()
            self._cache._fill_grew(self)

    @property
    def running(self) -> bool:
        return not self._finished and self._error is None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` and wake the readers waiting for it."""
        if not self.running:
            raise RuntimeError("the fill is no longer running")
        view = memoryview(data).cast("B")
        # XXX: a write stalls the event loop when the kernel throttles writers because the
        # disk is slower than the download; a worker thread per piece would cost more than
        # the write itself in the usual case.
        while view:
            piece = view[:_WRITE_PIECE]
            try:
                while piece:
                    count = os.pwrite(self._fd, piece, self._written)
                    self._written += count
                    piece = piece[count:]
            except OSError as error:
                self.fail(error)
                raise
            view = view[_WRITE_PIECE:]

            self._progress.set()
            self._progress = trio.Event()
            self._cache._fill_grew(self)
            if view:
                await trio.lowlevel.checkpoint()

    async def finish(self) -> CachedEntry:
        """Check the length, publish the content and wake every reader.

        Raises ``IncompleteContentError`` (and fails the fill) when the expected length is
        known and the written length differs.
        """
        if not self.running:
            raise RuntimeError("the fill is no longer running")
        if self._expected_length is not None and self._written != self._expected_length:
            error = IncompleteContentError(
                f"download gave {self._written} bytes, expected {self._expected_length}",
                self._expected_length,
                self._written,
            )
            self.fail(error)
            raise error

        try:
            record = self._cache._publish(self)
        except OSError as error:
            self.fail(error)
            raise
        self._finished = True
        # Pinned before making room, so that content larger than the whole cache is still
        # served through this fill.
        record.readers += 1
        weakref.finalize(self, _release, self._fd, record)
        self._cache._make_room()

        self._length_known.set()
        self._progress.set()
        return CachedEntry(self.key, record)

    def fail(self, error: BaseException) -> None:
        """Stop the fill: delete its file and make every reader raise ``error``.

        Does nothing when the fill already finished or failed. Errors that are not an
        ``Exception`` (cancellation, interrupts) reach readers as ``IncompleteContentError``,
        since re-raising them in other tasks would be wrong.
        """
        if not self.running:
            return
        if not isinstance(error, Exception):
            wrapped = IncompleteContentError(
                "download stopped before the end", self._expected_length, self._written
            )
            wrapped.__cause__ = error
            error = wrapped

        self._error = error
        os.close(self._fd)
        self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            self._temp_path.unlink()
        self._cache._fill_ended(self)
        log.debug("cache fill %s failed: %r", self._name[:12], error)

        self._length_known.set()
        self._progress.set()

    async def read(self, offset: int, size: int) -> bytes:
        """Return ``size`` bytes at ``offset`` once they are written.

        Waits until the range is written or the fill finished; a short result comes only
        from the true end of the finished content. Raises the fill's failure. Callers bound
        the wait with their own timeout.
        """
        if offset < 0 or size < 0:
            raise ValueError(f"invalid range {offset}+{size}")
        end = offset + size
        while self.running and self._written < end:
            await self._progress.wait()
        if self._error is not None:
            raise self._error
        return os.pread(self._fd, size, offset)

    async def wait_length(self) -> int:
        """Return the content length: the expected length once known, else the final one."""
        await self._length_known.wait()
        if self._error is not None:
            raise self._error
        if self._expected_length is not None:
            return self._expected_length
        return self._written

    def __enter__(self) -> Fill:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.fail(exc)
        elif self.running:
            self.fail(
                IncompleteContentError(
                    "download ended without finishing", self._expected_length, self._written
                )
            )

    def __repr__(self) -> str:
        state = "running" if self.running else "finished" if self._finished else "failed"
        return f"<Fill {self._name[:12]} {state} written={self._written}>"


class ContentCache:
    """Attachment content on disk, keyed by opaque strings, limited to ``max_bytes``."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"negative cache size {max_bytes}")
        self.directory = Path(directory)
        self._max = max_bytes
        self._used = 0
        # Complete entries by hashed key, least recently used first.
        self._index: OrderedDict[str, _Record] = OrderedDict()
        self._fills: dict[str, Fill] = {}

        self._prepare_directory()
        self._lock_fd = self._lock_directory()
        try:
            self._clear_partial()
            self._load_index()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._make_room()
        log.debug(
            "content cache at %s: %d entries, %d of %d bytes",
            self.directory,
            len(self._index),
            self._used,
            self._max,
        )

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def max_bytes(self) -> int:
        return self._max

    @property
    def entry_count(self) -> int:
        return len(self._index)

    def get(self, key: str) -> CachedEntry | None:
        """Return the complete entry for ``key`` and mark it recently used."""
        record = self._index.get(_hash_key(key))
        if record is None:
            return None
        try:
            # The mtime records recency across restarts.
            os.utime(record.path)
        except FileNotFoundError:
            log.warning(
                "cache entry %s was deleted from disk; it will be downloaded again",
                record.name[:12],
            )
            self._drop(record, unlink=False)
            return None
        except OSError as error:
            log.warning("cannot mark cache entry %s as used: %s", record.name[:12], error)
        self._index.move_to_end(record.name)
        return CachedEntry(key, record)

    def known_size(self, key: str) -> int | None:
        """Return the length of the complete entry for ``key``, without touching the disk."""
        record = self._index.get(_hash_key(key))
        return None if record is None else record.size

    def running_fill(self, key: str) -> Fill | None:
        """Return the fill in progress for ``key``, to read through it while it runs."""
        return self._fills.get(_hash_key(key))

    def begin_fill(self, key: str, expected_length: int | None = None) -> Fill:
        """Start writing the content for ``key``; it replaces any entry when finished.

        Raises ``ValueError`` when a fill for ``key`` is already running.
        """
        name = _hash_key(key)
        if name in self._fills:
            raise ValueError("a fill for this key is already running")
        if expected_length is not None and expected_length < 0:
            raise ValueError(f"negative length {expected_length}")

        temp_path = self.directory / "partial" / f"{name}.{secrets.token_hex(4)}"
        fd = os.open(temp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fill = Fill(self, key, name, temp_path, fd, expected_length)
        self._fills[name] = fill
        self._fill_grew(fill)
        log.debug("cache fill %s started, expecting %s bytes", name[:12], expected_length)
        return fill

    def remove(self, key: str) -> None:
        """Forget ``key``: delete its entry and keep a running fill from publishing.

        Open readers, and readers of a running fill, keep working.
        """
        name = _hash_key(key)
        fill = self._fills.pop(name, None)
        if fill is not None:
            fill._detached = True
        record = self._index.get(name)
        if record is not None:
            self._drop(record)
            log.debug("cache entry %s removed", name[:12])

    def close(self) -> None:
        """Fail running fills and release the directory; open readers keep working."""
        for fill in list(self._fills.values()):
            fill.fail(IncompleteContentError("cache closed", fill.expected_length, fill.written))
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # Start-up.

    def _prepare_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.directory.stat().st_mode)
        if mode & 0o077:
            # The directory holds mail attachments: only this user may see them.
            log.warning("cache directory %s had mode %o, setting 0700", self.directory, mode)
            self.directory.chmod(0o700)
        (self.directory / "partial").mkdir(mode=0o700, exist_ok=True)
        (self.directory / "entries").mkdir(mode=0o700, exist_ok=True)
        tag = self.directory / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text(_CACHEDIR_TAG)

    def _lock_directory(self) -> int:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CacheInUseError(
                f"cache directory {self.directory} is used by another running mount;"
                " give each mount its own cache directory"
            ) from None
        return fd

    def _clear_partial(self) -> None:
        count = 0
        with os.scandir(self.directory / "partial") as found:
            for item in found:
                if item.is_dir(follow_symlinks=False):
                    shutil.rmtree(item.path)
                else:
                    os.unlink(item.path)
                count += 1
        if count:
            log.info("deleted %d unfinished downloads from the cache", count)

    def _load_index(self) -> None:
        found: list[tuple[float, _Record]] = []
        damaged = 0
        with os.scandir(self.directory / "entries") as shards:
            for shard in shards:
                if not shard.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(shard.path) as files:
                    for item in files:
                        match = _ENTRY_NAME.fullmatch(item.name)
                        if match is None or not item.name.startswith(shard.name):
                            log.warning("ignoring unknown file %s in the cache", item.path)
                            continue
                        size = int(match[2])
                        info = item.stat(follow_symlinks=False)
                        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
                            # The file system lost data in a crash of the machine.
                            os.unlink(item.path)
                            damaged += 1
                            continue
                        found.append((info.st_mtime, _Record(match[1], Path(item.path), size)))
        if damaged:
            log.warning("deleted %d damaged entries from the cache", damaged)

        found.sort(key=lambda item: (item[0], item[1].name))
        for _, record in found:
            older = self._index.pop(record.name, None)
            if older is not None:
                # A crash came between publishing a new version and unlinking the old one.
                older.path.unlink()
                self._used -= older.size
            self._index[record.name] = record
            self._used += record.size

    # Bookkeeping for fills.

    def _fill_grew(self, fill: Fill) -> None:
        reserved = max(fill._written, fill._expected_length or 0)
        if fill._reserved <= self._max < reserved:
            log.info(
                "an attachment of at least %d bytes is larger than the whole cache (%d bytes);"
                " it is kept only until the space is needed",
                reserved,
                self._max,
            )
        self._used += reserved - fill._reserved
        fill._reserved = reserved
        if self._used > self._max:
            self._make_room()

    def _fill_ended(self, fill: Fill) -> None:
        self._used -= fill._reserved
        fill._reserved = 0
        if self._fills.get(fill._name) is fill:
            del self._fills[fill._name]

    def _publish(self, fill: Fill) -> _Record:
        """Move a verified fill into ``entries/`` and index it as most recently used."""
        size = fill._written
        shard = self.directory / "entries" / fill._name[:2]
        shard.mkdir(mode=0o700, exist_ok=True)
        path = shard / f"{fill._name}.{size}"
        record = _Record(fill._name, path, size)
        if fill._detached:
            fill._temp_path.unlink()
            record.removed = True
            self._fill_ended(fill)
            log.debug("cache fill %s finished after removal, not kept", fill._name[:12])
            return record

        os.rename(fill._temp_path, path)
        self._fill_ended(fill)
        older = self._index.get(fill._name)
        if older is not None:
            # Same size means the rename already replaced the old file.
            self._drop(older, unlink=older.path != path)
        self._index[record.name] = record
        self._used += size
        log.debug("cache entry %s stored, %d bytes", record.name[:12], size)
        return record

    # Eviction.

    def _make_room(self) -> None:
        """Evict least recently used entries nobody reads until the cache fits its limit."""
        excess = self._used - self._max
        if excess <= 0:
            return
        victims = []
        for record in self._index.values():
            if excess <= 0:
                break
            if record.readers == 0:
                victims.append(record)
                excess -= record.size
        for record in victims:
            self._drop(record)
            log.debug("cache entry %s evicted, %d bytes", record.name[:12], record.size)

    def _drop(self, record: _Record, unlink: bool = True) -> None:
        del self._index[record.name]
        self._used -= record.size
        record.removed = True
        if unlink:
            try:
                record.path.unlink()
            except FileNotFoundError:
                log.warning("cache entry %s was already deleted", record.name[:12])

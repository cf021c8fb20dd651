"""The FUSE operations: a thin layer over the namespace and the content service.

Every handler runs under ``_errors``, the one place where failures become errno values:
an exception other than ``FUSEError`` escaping a pyfuse3 handler would leave the kernel
request unanswered and end ``pyfuse3.main()``, taking the mount down.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from . import auth, graph
from .content import ContentHandle, ContentService
from .removal import Remover
from .tree import DirectoryNode, FileNode, Namespace, NamespaceError, NoSuchEntry, NotADirectory

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_BLOCK = 512
_XATTR_PREFIX = b"user.exchange."
_XATTR_MAX_CHARS = 4096
_IO_BLOCK = 128 * 1024


@dataclass(frozen=True, slots=True)
class FsOptions:
    uid: int
    gid: int
    umask: int = 0o022
    read_only: bool = False
    # How long the kernel may trust names and directory attributes: a poll interval. The
    # poller also invalidates what it sees change.
    entry_timeout: float = 60.0
    attr_timeout: float = 60.0
    # A file whose exact size is known never changes (attachments are immutable): the kernel
    # may keep its attributes far longer, and answer stat itself.
    settled_file_timeout: float = 3600.0
    # Extended attributes: off, the kernel learns once that there are none and stops asking
    # (ls -l asks for two per file, each a round trip to the daemon).
    xattrs: bool = False
    # Upper bound on any single operation that waits for Graph.
    operation_timeout: float = 120.0


def errno_for(exc: BaseException) -> int:
    """The errno a user should see for a failure below the filesystem layer."""
    match exc:
        case NoSuchEntry() | graph.NotFoundError():
            return errno.ENOENT
        case NotADirectory():
            return errno.ENOTDIR
        case graph.AccessDeniedError() | graph.MailboxUnavailableError():
            return errno.EACCES
        case OSError() if exc.errno:
            return exc.errno
        case _:
            return errno.EIO


def _errors(handler: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn every failure of a handler into a FUSEError, logging what the user cannot see."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (NamespaceError, graph.NotFoundError) as exc:
            log.debug("%s: %r", handler.__name__, exc)
            raise pyfuse3.FUSEError(errno_for(exc)) from None
        except trio.TooSlowError:
            log.warning("%s: no answer from Graph in time, answering EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except graph.TransientError as exc:
            # The Graph client already said once why it gave up.
            log.debug("%s failed: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except graph.GraphError as exc:
            log.warning("%s failed: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(errno_for(exc)) from None
        except auth.AuthError as exc:
            log.error("sign-in to Graph failed, files cannot be read: %s", exc.hint)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as exc:
            # The cache's own disk: full, gone read-only, or failing.
            log.error("%s: the attachment cache failed: %s", handler.__name__, exc.strerror)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class MailFilesystem(pyfuse3.Operations):
    """Mail folders as directories, attachments as read-only files."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        namespace: Namespace,
        content: ContentService,
        remover: Remover,
        options: FsOptions,
    ) -> None:
        super().__init__()
        self.namespace = namespace
        self.content = content
        self.remover = remover
        self.options = options
        self._listings: dict[int, Sequence[tuple[str, DirectoryNode | FileNode]]] = {}
        self._handles: dict[int, ContentHandle] = {}
        self._next_handle = 1
        self._refused: set[str] = set()

    # -- attributes -----------------------------------------------------------------------

    def _attributes(self, node: DirectoryNode | FileNode) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = node.inode
        attrs.generation = 0
        attrs.st_uid = self.options.uid
        attrs.st_gid = self.options.gid
        attrs.st_blksize = _IO_BLOCK
        attrs.entry_timeout = self.options.entry_timeout
        attrs.attr_timeout = self.options.attr_timeout
        writable = 0 if self.options.read_only else 0o200
        if isinstance(node, DirectoryNode):
            attrs.st_mode = stat.S_IFDIR | ((0o555 | writable) & ~self.options.umask)
            attrs.st_nlink = 2 + len(node.subfolders)
            attrs.st_size = 4096
            mtime = node.mtime
        else:
            attrs.st_mode = stat.S_IFREG | (0o444 & ~self.options.umask)
            attrs.st_nlink = 1
            size = self.content.known_size(node)
            if size is None:
                # Graph's size is only an estimate: never let the kernel keep it. With a zero
                # timeout every stat and read asks getattr, which learns the real length.
                size = node.attachment.size_estimate
                attrs.attr_timeout = 0
            elif node.parent.files is not None and node.parent.files.get(node.name) is node:
                # The poller invalidates a removed file's name, so the name may be kept too.
                attrs.attr_timeout = self.options.settled_file_timeout
                attrs.entry_timeout = self.options.settled_file_timeout
            else:
                # Gone from its folder, still answering for a while: the kernel keeps nothing.
                attrs.attr_timeout = attrs.entry_timeout = 0
            attrs.st_size = size
            mtime = node.mtime
        attrs.st_blocks = -(-attrs.st_size // _BLOCK)
        ns = int(mtime * 1e9)
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = ns
        return attrs

    async def _exact_attributes(self, node: DirectoryNode | FileNode) -> pyfuse3.EntryAttributes:
        if isinstance(node, FileNode) and self.content.known_size(node) is None:
            with trio.fail_after(self.options.operation_timeout):
                await self.content.exact_size(node)
        return self._attributes(node)

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._exact_attributes(self.namespace.get(inode))

    @_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with trio.fail_after(self.options.operation_timeout):
            node = await self.namespace.lookup(parent_inode, os.fsdecode(name))
        attrs = self._attributes(node)
        if name not in (b".", b".."):
            self.namespace.remember(node.inode)
        return attrs

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # forget() may raise nothing at all.
        try:
            for inode, count in inode_list:
                self.namespace.forget(inode, count)
        except Exception:
            log.exception("unexpected error in forget")

    # -- directories ----------------------------------------------------------------------

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        # A snapshot per open directory keeps offsets meaningful while the folder changes.
        with trio.fail_after(self.options.operation_timeout):
            listing = await self.namespace.entries(inode)
        handle = self._new_handle()
        self._listings[handle] = listing
        return handle

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._listings[fh]
        for index in range(start_id, len(listing)):
            name, node = listing[index]
            if not pyfuse3.readdir_reply(
                token, os.fsencode(name), self._attributes(node), index + 1
            ):
                return
            self.namespace.remember(node.inode)

    @_errors
    async def releasedir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    # -- files ----------------------------------------------------------------------------

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.namespace.get(inode)
        if not isinstance(node, FileNode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise pyfuse3.FUSEError(self._refuse("write"))
        # Learn the exact size before the first read, so the kernel never reads to an estimate.
        with trio.fail_after(self.options.operation_timeout):
            await self.content.exact_size(node)
        handle = self._new_handle()
        self._handles[handle] = self.content.open(node)
        return pyfuse3.FileInfo(fh=handle, keep_cache=True)

    @_errors
    # pyfuse3 takes any contiguous buffer; a view of the mapped cache file saves a copy.
    async def read(  # type: ignore[override]
        self, fh: int, off: int, size: int
    ) -> bytes | memoryview:
        handle = self._handles[fh]
        with trio.fail_after(self.options.operation_timeout):
            return await handle.read(off, size)

    @_errors
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            handle.close()

    def _new_handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if self.options.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)
        with trio.fail_after(self.options.operation_timeout):
            node = await self.namespace.lookup(parent_inode, os.fsdecode(name))
            if isinstance(node, DirectoryNode):
                raise pyfuse3.FUSEError(errno.EISDIR)
            try:
                await self.remover.remove(node)
            except graph.TransientError as exc:
                # The attachment is still there and still listed: worth trying again later.
                log.warning("cannot remove %s now: %s", self.namespace.path(node), exc)
                raise pyfuse3.FUSEError(errno.EAGAIN) from None

    # -- extended attributes: status for a person (getfattr -d) ----------------------------

    async def _extended_attributes(self, node: DirectoryNode | FileNode) -> dict[str, str]:
        if isinstance(node, FileNode):
            message, attachment = node.message, node.attachment
            values = {
                "subject": message.subject,
                "sender": message.sender,
                "received": message.received.isoformat(),
                **await self._message_details(node),
                "attachment_name": attachment.name,
                "content_type": attachment.content_type,
                "mailbox": node.mailbox,
            }
        elif node.inode == self.namespace.root.inode:
            directories, files = self.namespace.counts()
            cache = self.content.cache
            stats = self.content.graph.stats
            values = {
                "mailboxes": " ".join(self.namespace.mailboxes),
                "folders": str(directories),
                "files": str(files),
                "cache_used_bytes": str(cache.used_bytes),
                "cache_max_bytes": str(cache.max_bytes),
                "cache_entries": str(cache.entry_count),
                "graph_requests": str(stats.requests),
                "graph_retries": str(stats.retries),
                "graph_throttled": str(stats.throttled),
                "graph_failures": str(stats.failures),
                "bytes_downloaded": str(stats.bytes_downloaded),
            }
        else:
            values = {
                "folder": node.folder.display_name if node.folder else None,
                "mailbox": node.mailbox,
            }
        # The kernel takes values up to 64 KiB; a subject may be longer.
        return {
            f"user.exchange.{key}": value[:_XATTR_MAX_CHARS]
            for key, value in values.items()
            if value
        }

    async def _message_details(self, node: FileNode) -> dict[str, str | None]:
        # Not kept from listings, to save memory: asked for once per message when read.
        if node.message.web_link is None:
            with trio.fail_after(self.options.operation_timeout):
                link, message_id = await self.content.graph.message_details(
                    node.mailbox, node.message.id
                )
            node.message = dataclasses.replace(
                node.message, web_link=link or "", internet_message_id=message_id
            )
        return {
            "message_id": node.message.internet_message_id,
            "web_link": node.message.web_link or None,
        }

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if not self.options.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        names = await self._extended_attributes(self.namespace.get(inode))
        return [name.encode() for name in names]

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not self.options.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if not name.startswith(_XATTR_PREFIX):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)  # security.*, system.*: asked by ls -l
        attributes = await self._extended_attributes(self.namespace.get(inode))
        value = attributes.get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value.encode("utf-8", "surrogateescape")

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(self._refuse("removexattr"))

    # -- what is not supported ------------------------------------------------------------

    def _refuse(self, operation: str) -> int:
        """The errno for a change the mount does not make; logged once per kind."""
        if operation not in self._refused:
            self._refused.add(operation)
            log.info("refusing %s: attachments and folders cannot be changed that way", operation)
        return errno.EROFS if self.options.read_only else errno.EPERM

    @_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(self._refuse("setattr"))

    @_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        raise pyfuse3.FUSEError(self._refuse("create"))

    @_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        raise pyfuse3.FUSEError(self._refuse("mknod"))

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        raise pyfuse3.FUSEError(self._refuse("mkdir"))

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        raise pyfuse3.FUSEError(self._refuse("rmdir"))

    @_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        raise pyfuse3.FUSEError(self._refuse("rename"))

    @_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        raise pyfuse3.FUSEError(self._refuse("symlink"))

    @_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        raise pyfuse3.FUSEError(self._refuse("link"))

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        raise pyfuse3.FUSEError(self._refuse("write"))

    @_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise pyfuse3.FUSEError(self._refuse("setxattr"))

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        used = self.content.cache.used_bytes
        data.f_bsize = _IO_BLOCK
        data.f_frsize = _BLOCK
        # Sizes describe the attachment cache: how much is downloaded, and the room left.
        capacity = max(used, self.content.cache.max_bytes)
        data.f_blocks = -(-capacity // _BLOCK)
        data.f_bfree = data.f_bavail = (capacity - used) // _BLOCK
        # No inode limit exists: zero totals make df -i show "-" rather than a full disk.
        data.f_files = data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data


class KernelInvalidator:
    """Drops kernel caches through pyfuse3, off the trio thread.

    pyfuse3's notify calls are synchronous and wait for kernel locks that a request being
    handled on the trio thread may hold; run in a worker thread they cannot deadlock it.
    """

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(1)

    async def entry_gone(self, parent_inode: int, name: str) -> None:
        await self._notify(pyfuse3.invalidate_entry, parent_inode, os.fsencode(name))

    async def attributes_changed(self, inode: int) -> None:
        await self._notify(pyfuse3.invalidate_inode, inode, True)

    async def _notify(self, call: Callable[..., None], *args: Any) -> None:
        try:
            await trio.to_thread.run_sync(
                call, *args, abandon_on_cancel=True, limiter=self._limiter
            )
        except FileNotFoundError:
            pass  # the kernel had nothing cached for it
        except OSError as exc:
            log.debug("kernel invalidation %s%r failed: %s", call.__name__, args, exc)

"""The namespace: mailboxes, folders and attachment entries, with stable names and inodes.

Knows nothing of FUSE. The filesystem layer asks it for nodes by inode or by (directory,
name); it asks the Graph client for the folder tree at start and for a folder's messages the
first time that folder is looked at.

Rules kept here (the name text itself comes from ``naming``):

- An inode number belongs to one folder or one attachment for the life of the mount and is
  never reused, so ``generation`` stays 0 and the kernel never mixes two files up.
- Inside a directory subfolders claim their names first (a file never hides a subfolder);
  attachments then take names oldest first by (received time, message id, attachment order),
  later ones numbered `` (2)``, `` (3)``...
- A name, once given to an attachment, stays with it while the attachment exists. When it goes
  away, its name is retired until the kernel has forgotten the old inode, so a new attachment
  never inherits a name the kernel may still resolve to the old file.
- A name returned by ``readdir`` keeps answering ``lookup`` for ``linger`` seconds after its
  attachment disappeared, so a tool walking the listing does not see it vanish mid-walk.
"""

from __future__ import annotations

import fnmatch
import logging
import operator
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import trio

from . import naming
from .mail import (
    AttachmentKind,
    AttachmentRecord,
    FolderId,
    FolderRecord,
    MailboxAddress,
    MessageRecord,
)

log = logging.getLogger(__name__)

ROOT_INODE = 1
# Oldest first by (received time, message id, attachment order): who keeps the plain name.
_LISTING_ORDER = operator.itemgetter(0, 1, 2)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NamespaceError(Exception):
    """Base of the namespace's own errors; Graph errors pass through unchanged."""


class NoSuchEntry(NamespaceError):
    pass


class NotADirectory(NamespaceError):
    pass


@dataclass(eq=False, slots=True)
class DirectoryNode:
    """A mailbox root or a mail folder (or, with several mailboxes, the mount root)."""

    inode: int
    name: str
    parent: DirectoryNode | None
    mailbox: MailboxAddress | None
    folder: FolderRecord | None
    subfolders: dict[str, DirectoryNode] = field(default_factory=dict)
    # Entries by name; None until the folder's messages are first listed.
    files: dict[str, FileNode] | None = None
    # Graph keeps no time for folders; a fixed one keeps a second rsync -a from touching
    # every directory again.
    mtime: float = 0.0
    # Names of attachments that went away, held until the kernel forgets their inode.
    retired: dict[str, int] = field(default_factory=dict)
    # Attachments that went away but whose names were handed out recently: name -> deadline.
    lingering: dict[str, tuple[FileNode, float]] = field(default_factory=dict)
    # The files in listing order, for reading ahead of tools that copy one file at a time.
    order: list[FileNode] = field(default_factory=list)

    @property
    def lists_messages(self) -> bool:
        return self.folder is not None and self.folder.parent_id is not None


@dataclass(eq=False, slots=True)
class FileNode:
    """One attachment of one message, shown as a regular file."""

    inode: int
    name: str
    parent: DirectoryNode
    mailbox: MailboxAddress
    message: MessageRecord
    attachment: AttachmentRecord
    # The exact content length once learnt; Graph's size is only an estimate.
    size: int | None = None
    # Index in the directory's listing order (see DirectoryNode.order).
    position: int = 0

    @property
    def identity(self) -> tuple[str, str, str]:
        """The attachment this file shows, as (mailbox, message id, attachment id)."""
        return (self.mailbox, self.message.id, self.attachment.id)

    @property
    def key(self) -> str:
        """Identifies the content: the same attachment always has the same key."""
        return f"{self.mailbox}\0{self.message.id}\0{self.attachment.id}"

    @property
    def mtime(self) -> float:
        return self.message.received.timestamp()


Node = DirectoryNode | FileNode


@dataclass(frozen=True, slots=True)
class NamespaceOptions:
    show_inline: bool = False
    include_hidden_folders: bool = False
    # Glob patterns on final file names; a file is shown when it matches an include pattern
    # (or there are none) and no exclude pattern.
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # Folder paths ("Inbox/Spam") to leave out, with everything below them.
    exclude_folders: tuple[str, ...] = ()
    # A name template replacing "<subject>-<attachment name>", or None.
    name_template: str | None = None
    linger: float = 60.0


class ListingSource(Protocol):
    """What the namespace needs from the Graph client."""

    async def list_folder_tree(
        self, mailbox: MailboxAddress, *, include_hidden: bool = False
    ) -> list[FolderRecord]: ...

    async def get_mailbox_root(self, mailbox: MailboxAddress) -> FolderRecord: ...

    async def list_messages(
        self,
        mailbox: MailboxAddress,
        folder_id: FolderId,
        *,
        on_page: Callable[[list[MessageRecord]], Awaitable[None]] | None = None,
    ) -> list[MessageRecord]: ...


class Namespace:
    """The tree of directories and files, loaded lazily from Graph."""

    def __init__(
        self,
        source: ListingSource,
        mailboxes: Sequence[MailboxAddress],
        options: NamespaceOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not mailboxes:
            raise ValueError("at least one mailbox is needed")
        self._source = source
        self.mailboxes = tuple(mailboxes)
        self.options = options or NamespaceOptions()
        self._clock = clock
        self._nodes: dict[int, Node] = {}
        # Tuples share their strings with the records: far smaller than joined text keys
        # when a mount lists hundreds of thousands of attachments.
        self._inode_by_key: dict[tuple[str, ...], int] = {}
        self._next_inode = ROOT_INODE + 1
        self._lookups: dict[int, int] = {}
        self._listing_locks: dict[int, trio.Lock] = {}
        self.root = DirectoryNode(
            inode=ROOT_INODE, name="", parent=None, mailbox=None, folder=None
        )
        self._nodes[ROOT_INODE] = self.root

    # -- building -------------------------------------------------------------------------

    async def load(self) -> None:
        """Load every mailbox's folder tree (not their messages)."""
        for mailbox in self.mailboxes:
            await self.load_mailbox(mailbox)

    async def load_mailbox(self, mailbox: MailboxAddress) -> None:
        """Load one mailbox's folder tree."""
        root_folder = await self._source.get_mailbox_root(mailbox)
        folders = await self._source.list_folder_tree(
            mailbox, include_hidden=self.options.include_hidden_folders
        )
        if len(self.mailboxes) == 1:
            mailbox_dir = self.root
            mailbox_dir.mailbox = mailbox
            mailbox_dir.folder = root_folder
        else:
            mailbox_dir = self._directory(
                ("mailbox", mailbox),
                _first_free(naming.folder_entry_name(mailbox), self.root.subfolders),
                self.root,
                mailbox,
                root_folder,
            )
            self.root.subfolders[mailbox_dir.name] = mailbox_dir
        self._set_subfolders(mailbox_dir, root_folder.id, folders)
        log.info("mailbox %s: %d folders loaded", mailbox, len(folders))

    def replace_folder_tree(
        self, mailbox: MailboxAddress, folders: Sequence[FolderRecord]
    ) -> list[DirectoryNode]:
        """Apply a fresh folder tree; returns the directories whose entries changed."""
        mailbox_dir = self.mailbox_directory(mailbox)
        assert mailbox_dir.folder is not None
        return self._set_subfolders(mailbox_dir, mailbox_dir.folder.id, folders)

    def _set_subfolders(
        self, mailbox_dir: DirectoryNode, root_id: FolderId, folders: Sequence[FolderRecord]
    ) -> list[DirectoryNode]:
        assert mailbox_dir.mailbox is not None
        mailbox = mailbox_dir.mailbox
        children: dict[FolderId | None, list[FolderRecord]] = {}
        for folder in folders:
            if folder.is_search_folder:
                continue
            children.setdefault(folder.parent_id, []).append(folder)

        changed: list[DirectoryNode] = []

        def attach(directory: DirectoryNode, folder_id: FolderId, path: str) -> None:
            wanted = sorted(children.get(folder_id, ()), key=lambda f: (f.display_name, f.id))
            before = {name: node.inode for name, node in directory.subfolders.items()}
            by_inode = {node.inode: node for node in directory.subfolders.values()}

            # Folders already shown keep their names; only new and renamed ones are named,
            # and around every name in use, files included: a shown name never moves.
            placed: list[tuple[FolderRecord, DirectoryNode | None, str]] = []
            kept: set[str] = set()
            for folder in wanted:
                folder_path = f"{path}/{folder.display_name}" if path else folder.display_name
                if self._folder_excluded(folder_path):
                    continue
                inode = self._inode_by_key.get(("folder", mailbox, folder.id))
                known = by_inode.get(inode) if inode is not None else None
                unchanged = (
                    known is not None
                    and known.folder is not None
                    and known.folder.display_name == folder.display_name
                )
                if unchanged and known is not None:
                    kept.add(known.name)
                placed.append((folder, known if unchanged else None, folder_path))

            unavailable = _Either(kept, directory.files or {})
            subfolders: dict[str, DirectoryNode] = {}
            for folder, known, folder_path in placed:
                if known is not None:
                    name = known.name
                else:
                    name = _first_free(
                        naming.folder_entry_name(folder.display_name),
                        _Either(unavailable, subfolders),
                    )
                node = self._directory(
                    ("folder", mailbox, folder.id), name, directory, mailbox, folder
                )
                node.name = name
                node.folder = folder
                subfolders[name] = node
                attach(node, folder.id, folder_path)
            directory.subfolders = subfolders
            after = {name: node.inode for name, node in subfolders.items()}
            if after != before:
                changed.append(directory)
                if directory.files is not None:
                    self._apply_messages(directory, self._messages_of(directory))

        attach(mailbox_dir, root_id, "")
        return changed

    def _folder_excluded(self, path: str) -> bool:
        return any(
            path == excluded or path.startswith(excluded + "/")
            for excluded in self.options.exclude_folders
        )

    def _directory(
        self,
        key: tuple[str, ...],
        name: str,
        parent: DirectoryNode,
        mailbox: MailboxAddress,
        folder: FolderRecord,
    ) -> DirectoryNode:
        inode = self._inode_by_key.get(key)
        if inode is not None:
            node = self._nodes[inode]
            assert isinstance(node, DirectoryNode)
            node.parent = parent
            return node
        inode = self._allocate(key)
        node = DirectoryNode(inode=inode, name=name, parent=parent, mailbox=mailbox, folder=folder)
        self._nodes[inode] = node
        return node

    def _allocate(self, key: tuple[str, ...]) -> int:
        inode = self._next_inode
        self._next_inode += 1
        self._inode_by_key[key] = inode
        return inode

    # -- messages -------------------------------------------------------------------------

    async def ensure_listed(self, directory: DirectoryNode) -> dict[str, FileNode]:
        """The directory's files, listing its messages from Graph on first use."""
        if directory.files is not None:
            return directory.files
        if not directory.lists_messages:
            directory.files = {}
            return directory.files
        lock = self._listing_locks.setdefault(directory.inode, trio.Lock())
        async with lock:
            if directory.files is None:
                assert directory.mailbox is not None and directory.folder is not None
                names: dict[tuple[str, str], tuple[AttachmentRecord, naming.EntryName, str]] = {}

                async def name_page(page: list[MessageRecord]) -> None:
                    # Named while the next page is on its way, not all after the last one.
                    for message in page:
                        for attachment in message.attachments:
                            entry_name = self._entry_name(message, attachment)
                            names[message.id, attachment.id] = (
                                attachment,
                                entry_name,
                                entry_name.render(),
                            )
                        await trio.lowlevel.checkpoint()

                messages = await self._source.list_messages(
                    directory.mailbox, directory.folder.id, on_page=name_page
                )
                self._apply_messages(directory, messages, names)
                log.debug(
                    "listed %s: %d messages, %d files",
                    self.path(directory),
                    len(messages),
                    len(directory.files or {}),
                )
        assert directory.files is not None
        return directory.files

    def apply_listing(
        self, directory: DirectoryNode, messages: Iterable[MessageRecord]
    ) -> tuple[list[FileNode], list[FileNode]]:
        """Replace a listed directory's messages; returns (files added, files removed)."""
        return self._apply_messages(directory, list(messages))

    def _messages_of(self, directory: DirectoryNode) -> list[MessageRecord]:
        seen: dict[str, MessageRecord] = {}
        for node in (directory.files or {}).values():
            seen.setdefault(node.message.id, node.message)
        return list(seen.values())

    def _apply_messages(
        self,
        directory: DirectoryNode,
        messages: list[MessageRecord],
        names: Mapping[tuple[str, str], tuple[AttachmentRecord, naming.EntryName, str]]
        | None = None,
    ) -> tuple[list[FileNode], list[FileNode]]:
        assert directory.mailbox is not None
        mailbox = directory.mailbox
        old_files = directory.files or {}
        old_by_key = {node.identity: node for node in old_files.values()}

        wanted: list[tuple[datetime, str, int, MessageRecord, AttachmentRecord]] = []
        for message in messages:
            for index, attachment in enumerate(message.attachments):
                if attachment.is_inline and not self.options.show_inline:
                    continue
                wanted.append((message.received or _EPOCH, message.id, index, message, attachment))
        wanted.sort(key=_LISTING_ORDER)

        files: dict[str, FileNode] = {}
        taken = set(directory.subfolders)
        added: list[FileNode] = []
        fresh: list[tuple[naming.EntryName, str, MessageRecord, AttachmentRecord]] = []

        # Attachments already shown keep their names; new ones are named afterwards, oldest
        # first, so a newcomer never takes a name away from an entry the kernel knows.
        for _, _, _, message, attachment in wanted:
            existing = (
                old_by_key.pop((mailbox, message.id, attachment.id), None) if old_by_key else None
            )
            if existing is not None and existing.name not in taken:
                existing.message = message
                existing.attachment = attachment
                files[existing.name] = existing
                taken.add(existing.name)
                continue
            named = names.get((message.id, attachment.id)) if names else None
            # A record completed after its page was named (an item attachment's type) is
            # named again.
            if named is not None and named[0] is attachment:
                _, entry_name, plain = named
            else:
                entry_name = self._entry_name(message, attachment)
                plain = entry_name.render()
            if not self._shown(plain):
                continue
            fresh.append((entry_name, plain, message, attachment))

        self._release_retired(directory)
        unavailable: Container[str] = (
            _Either(taken, directory.retired) if directory.retired else taken
        )
        last_ordinals: dict[naming.EntryName, int] = {}
        for entry_name, plain, message, attachment in fresh:
            name = (
                plain
                if plain not in unavailable
                else _first_free(entry_name, unavailable, last_ordinals)
            )
            node = self._file(name, directory, mailbox, message, attachment)
            files[name] = node
            taken.add(name)
            added.append(node)

        removed = list(old_by_key.values())
        now = self._clock()
        for node in removed:
            directory.retired[node.name] = node.inode
            directory.lingering[node.name] = (node, now + self.options.linger)

        directory.files = files
        directory.order = list(files.values())
        for position, node in enumerate(directory.order):
            node.position = position
        return added, removed

    def _entry_name(
        self, message: MessageRecord, attachment: AttachmentRecord
    ) -> naming.EntryName:
        if self.options.name_template is not None:
            return naming.templated_entry_name(
                self.options.name_template,
                {
                    "subject": message.subject,
                    "attachment": attachment.name,
                    "sender": message.sender,
                    "received": message.received,
                    "message_id": message.internet_message_id or message.id,
                },
                kind=attachment.kind,
                item_type=attachment.item_type,
                content_type=attachment.content_type,
            )
        return naming.attachment_entry_name(
            message.subject,
            attachment.name,
            attachment.kind,
            item_type=attachment.item_type,
            content_type=attachment.content_type,
        )

    def _shown(self, name: str) -> bool:
        include, exclude = self.options.include, self.options.exclude
        if not include and not exclude:
            return True
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in exclude)

    def _release_retired(self, directory: DirectoryNode) -> None:
        now = self._clock()
        for name, (_, deadline) in list(directory.lingering.items()):
            if now >= deadline:
                del directory.lingering[name]
        for name, inode in list(directory.retired.items()):
            if self._lookups.get(inode, 0) == 0 and name not in directory.lingering:
                del directory.retired[name]

    def _file(
        self,
        name: str,
        parent: DirectoryNode,
        mailbox: MailboxAddress,
        message: MessageRecord,
        attachment: AttachmentRecord,
    ) -> FileNode:
        # Files shown since the last listing keep their node (and inode) through
        # _apply_messages; a new one gets a number never used before. Unlike folders, files
        # are not indexed by id: that index would cost more per file than the file itself.
        inode = self._next_inode
        self._next_inode += 1
        node = FileNode(
            inode=inode,
            name=name,
            parent=parent,
            mailbox=mailbox,
            message=message,
            attachment=attachment,
        )
        if attachment.kind is AttachmentKind.REFERENCE and attachment.source_url:
            node.size = len(naming.reference_shortcut(attachment.source_url))
        self._nodes[inode] = node
        return node

    def remove_file(self, file: FileNode) -> None:
        """Drop a file the user removed: gone from listings and lookups at once."""
        directory = file.parent
        if directory.files is not None and directory.files.get(file.name) is file:
            del directory.files[file.name]
            directory.retired[file.name] = file.inode
        directory.lingering.pop(file.name, None)

    def following(self, file: FileNode, count: int) -> list[FileNode]:
        """Up to count files listed after this one in its directory, still present."""
        directory = file.parent
        files = directory.files or {}
        start = file.position + 1
        return [
            node for node in directory.order[start : start + count] if files.get(node.name) is node
        ]

    def shows(self, attachment: AttachmentRecord) -> bool:
        """Whether the mount lists attachments like this one (inline ones only on request)."""
        return self.options.show_inline or not attachment.is_inline

    # -- queries --------------------------------------------------------------------------

    def get(self, inode: int) -> Node:
        try:
            return self._nodes[inode]
        except KeyError:
            raise NoSuchEntry(inode) from None

    def directory(self, inode: int) -> DirectoryNode:
        node = self.get(inode)
        if not isinstance(node, DirectoryNode):
            raise NotADirectory(inode)
        return node

    def mailbox_directory(self, mailbox: MailboxAddress) -> DirectoryNode:
        if self.root.mailbox == mailbox:
            return self.root
        for node in self.root.subfolders.values():
            if node.mailbox == mailbox:
                return node
        raise NoSuchEntry(mailbox)

    def folder_by_path(self, mailbox: MailboxAddress, path: str) -> DirectoryNode | None:
        """A mail folder by its display-name path, such as "Inbox/Processed"."""
        directory = self.mailbox_directory(mailbox)
        for part in path.strip("/").split("/"):
            directory_or_none = next(
                (
                    node
                    for node in directory.subfolders.values()
                    if node.folder is not None and node.folder.display_name == part
                ),
                None,
            )
            if directory_or_none is None:
                return None
            directory = directory_or_none
        return directory

    async def lookup(self, parent_inode: int, name: str) -> Node:
        directory = self.directory(parent_inode)
        if name == ".":
            return directory
        if name == "..":
            return directory.parent or directory
        subfolder = directory.subfolders.get(name)
        if subfolder is not None:
            return subfolder
        files = await self.ensure_listed(directory)
        node = files.get(name)
        if node is not None:
            return node
        lingering = directory.lingering.get(name)
        if lingering is not None:
            gone, deadline = lingering
            if self._clock() < deadline:
                self._nodes[gone.inode] = gone
                return gone
            del directory.lingering[name]
        raise NoSuchEntry(name)

    async def entries(self, inode: int) -> list[tuple[str, Node]]:
        """A directory's entries: subfolders first, then files in listing order."""
        directory = self.directory(inode)
        files = await self.ensure_listed(directory)
        listing: list[tuple[str, Node]] = list(directory.subfolders.items())
        listing.extend(files.items())
        return listing

    def path(self, node: Node) -> str:
        parts: list[str] = []
        current: Node | None = node
        while current is not None and current.inode != ROOT_INODE:
            parts.append(current.name)
            current = current.parent
        return "/" + "/".join(reversed(parts))

    def watched_directories(self) -> list[DirectoryNode]:
        """Directories whose messages have been listed (the kernel has looked at them)."""
        return [
            node
            for node in self._nodes.values()
            if isinstance(node, DirectoryNode) and node.files is not None and node.lists_messages
        ]

    def counts(self) -> tuple[int, int]:
        """(directories, files) currently known."""
        directories = files = 0
        for node in self._nodes.values():
            if isinstance(node, DirectoryNode):
                directories += 1
                files += len(node.files or ())
        return directories, files

    # -- kernel lookup counts -------------------------------------------------------------

    def remember(self, inode: int) -> None:
        """The kernel took a reference (lookup, or an entry accepted by readdir)."""
        self._lookups[inode] = self._lookups.get(inode, 0) + 1

    def forget(self, inode: int, count: int) -> None:
        remaining = self._lookups.get(inode, 0) - count
        if remaining > 0:
            self._lookups[inode] = remaining
            return
        self._lookups.pop(inode, None)
        node = self._nodes.get(inode)
        listed = isinstance(node, FileNode) and node.parent.files is not None
        if listed and node.parent.files.get(node.name) is not node:  # type: ignore[union-attr]
            # Gone from the listing and unknown to the kernel: drop it (its number is never
            # given out again).
            del self._nodes[inode]

    def lookup_count(self, inode: int) -> int:
        return self._lookups.get(inode, 0)


def _first_free(
    entry_name: naming.EntryName,
    taken: Container[str],
    last_ordinals: dict[naming.EntryName, int] | None = None,
) -> str:
    """The first name of this entry's series not taken.

    ``last_ordinals`` remembers where each series got to, so that naming a folder of
    thousands of same-named attachments does not try every number again for each.
    """
    ordinal = 1 if last_ordinals is None else last_ordinals.get(entry_name, 0) + 1
    while True:
        name = entry_name.render(ordinal)
        if name not in taken:
            if last_ordinals is not None:
                last_ordinals[entry_name] = ordinal
            return name
        ordinal += 1


class _Either(Container[str]):
    """Names in either collection, without copying them into one."""

    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self._first = first
        self._second = second

    def __contains__(self, name: object) -> bool:
        return name in self._first or name in self._second

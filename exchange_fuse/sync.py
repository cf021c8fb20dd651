"""The poller: keeps folder trees and the listed folders fresh, and tells the kernel.

Every ``interval`` seconds (or at once when asked, e.g. on SIGHUP) it refreshes each
mailbox's folder tree and asks Graph's per-folder message delta whether anything changed in
the folders the kernel has looked at. An unchanged folder costs one delta request. A folder
that changed is listed again and the namespace applies the difference, keeping the names and
inodes of unchanged attachments.

The kernel is told through an ``Invalidator`` only after the namespace has changed, so a
lookup racing with the poll cannot cache the old state again. When Graph cannot be reached,
the last listing keeps being served and a warning says so.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from . import graph
from .tree import DirectoryNode, Namespace

log = logging.getLogger(__name__)


class Invalidator(Protocol):
    """Tells the kernel to drop what it cached; implemented over pyfuse3 by the fs layer."""

    async def entry_gone(self, parent_inode: int, name: str) -> None: ...

    async def attributes_changed(self, inode: int) -> None: ...


class Poller:
    def __init__(
        self,
        client: graph.GraphClient,
        namespace: Namespace,
        invalidator: Invalidator,
        interval: float,
    ) -> None:
        self._graph = client
        self._namespace = namespace
        self._invalidator = invalidator
        self.interval = interval
        self._delta_links: dict[int, str] = {}
        self._folder_links: dict[str, str] = {}
        self._wake = trio.Event()
        self._stale: set[str] = set()
        self.polls = 0

    def refresh_now(self) -> None:
        """Poll at once instead of waiting for the interval."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.poll()

    async def poll(self) -> None:
        """One round over every mailbox and every watched folder; never raises."""
        self.polls += 1
        mailbox_dirs = self._mailbox_directories()
        watched = self._namespace.watched_directories()

        # The first request of every delta round goes out in JSON batches: twenty folders
        # cost one request. When batching fails, each round asks on its own.
        requests = [
            self._graph.folder_delta_request(
                mailbox_dir.mailbox, self._folder_links.get(mailbox_dir.mailbox)
            )
            for mailbox_dir in mailbox_dirs
            if mailbox_dir.mailbox is not None
        ]
        for directory in watched:
            assert directory.mailbox is not None and directory.folder is not None
            requests.append(
                self._graph.message_delta_request(
                    directory.mailbox,
                    directory.folder.id,
                    self._delta_links.get(directory.inode),
                )
            )
        first_pages: list[dict[str, Any] | graph.GraphError | None]
        try:
            first_pages = list(await self._graph.batch(requests))
        except graph.GraphError as exc:
            log.debug("batched poll failed, polling one folder at a time: %s", exc)
            first_pages = [None] * len(requests)

        answers = iter(first_pages)
        for mailbox_dir in mailbox_dirs:
            assert mailbox_dir.mailbox is not None
            await self._guarded(
                f"folders of {mailbox_dir.mailbox}", self._poll_tree(mailbox_dir, next(answers))
            )
        for directory in watched:
            await self._guarded(
                self._namespace.path(directory), self._poll_folder(directory, next(answers))
            )

    def _mailbox_directories(self) -> list[DirectoryNode]:
        root = self._namespace.root
        if root.mailbox is not None:
            return [root]
        return [node for node in root.subfolders.values() if node.mailbox is not None]

    async def _guarded(self, what: str, work: object) -> None:
        try:
            await work  # type: ignore[misc]
        except (graph.GraphError, OSError) as exc:
            if what not in self._stale:
                log.warning("cannot refresh %s, serving the last listing: %s", what, exc)
                self._stale.add(what)
            return
        except Exception:
            log.exception("unexpected error while refreshing %s", what)
            return
        if what in self._stale:
            self._stale.discard(what)
            log.info("refreshed %s again, the listing is current", what)

    async def _poll_tree(
        self, mailbox_dir: DirectoryNode, first_page: dict[str, Any] | graph.GraphError | None
    ) -> None:
        mailbox = mailbox_dir.mailbox
        assert mailbox is not None
        # The folder delta costs one request when nothing changed; the tree walk one per
        # folder that has subfolders. Walk only when the delta says something moved.
        link = self._folder_links.get(mailbox)
        try:
            if isinstance(first_page, graph.GraphError):
                raise first_page
            delta = await self._graph.folder_delta(mailbox, link, first_page=first_page)
        except graph.SyncStateExpiredError:
            link, delta = None, await self._graph.folder_delta(mailbox, None)
        if link is not None and not delta.changed and not delta.removed:
            self._folder_links[mailbox] = delta.delta_link
            return

        before = self._entry_names(mailbox_dir)
        folders = await self._graph.list_folder_tree(
            mailbox, include_hidden=self._namespace.options.include_hidden_folders
        )
        changed = self._namespace.replace_folder_tree(mailbox, folders)
        # Only now is the round's news applied: a failure before this point leaves the old
        # link, and the next poll sees the same changes again.
        self._folder_links[mailbox] = delta.delta_link
        for directory in changed:
            gone = before.get(directory.inode, set()) - set(directory.subfolders)
            gone -= set(directory.files or ())
            for name in sorted(gone):
                await self._invalidator.entry_gone(directory.inode, name)
            await self._invalidator.attributes_changed(directory.inode)

    def _entry_names(self, mailbox_dir: DirectoryNode) -> dict[int, set[str]]:
        names: dict[int, set[str]] = {}
        pending = [mailbox_dir]
        while pending:
            directory = pending.pop()
            names[directory.inode] = set(directory.subfolders)
            pending.extend(directory.subfolders.values())
        return names

    async def _poll_folder(
        self, directory: DirectoryNode, first_page: dict[str, Any] | graph.GraphError | None
    ) -> None:
        assert directory.mailbox is not None and directory.folder is not None
        mailbox, folder_id = directory.mailbox, directory.folder.id
        link = self._delta_links.get(directory.inode)
        try:
            if isinstance(first_page, graph.GraphError):
                raise first_page
            delta = await self._graph.message_delta(
                mailbox, folder_id, link, first_page=first_page
            )
        except graph.SyncStateExpiredError:
            # Graph forgot our place: start a new round; the listing stays served meanwhile.
            log.info("delta of %s expired, listing it again", self._namespace.path(directory))
            link = None
            delta = await self._graph.message_delta(mailbox, folder_id, None)
        # The first round returns every message: relist, since mail may have changed between
        # the listing the kernel saw and this round.
        if link is not None and not delta.changed and not delta.removed:
            self._delta_links[directory.inode] = delta.delta_link
            return
        messages = await self._graph.list_messages(mailbox, folder_id)
        added, removed = self._namespace.apply_listing(directory, messages)
        # Kept only once applied: if the listing failed, the next poll sees the news again.
        self._delta_links[directory.inode] = delta.delta_link
        for node in removed:
            await self._invalidator.entry_gone(directory.inode, node.name)
        if added or removed:
            log.info(
                "%s: %d new, %d gone",
                self._namespace.path(directory),
                len(added),
                len(removed),
            )
            await self._invalidator.attributes_changed(directory.inode)

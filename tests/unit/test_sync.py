"""The poller without a kernel: what a failed refresh leaves for the next poll."""

from __future__ import annotations

from typing import Any

from exchange_fuse import graph
from exchange_fuse.mail import FolderId, MailboxAddress, MessageRecord
from exchange_fuse.sync import Poller
from exchange_fuse.tree import ROOT_INODE, DirectoryNode, Namespace
from tests.unit.test_tree import RecordedMailbox, attachment, loaded, message


class FlakyGraph(RecordedMailbox):
    """Deltas by link, as Graph keeps them; the next listing can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.news_since: dict[str | None, bool] = {}
        self.fail_next_listing = False

    def folder_delta_request(self, mailbox: MailboxAddress, link: str | None) -> tuple[str, None]:
        return f"folders:{link}", None

    def message_delta_request(
        self, mailbox: MailboxAddress, folder_id: FolderId, link: str | None
    ) -> tuple[str, None]:
        return f"messages:{link}", None

    async def batch(self, requests: list[tuple[str, Any]]) -> list[None]:
        return [None] * len(requests)

    async def folder_delta(
        self, mailbox: MailboxAddress, link: str | None, *, first_page: Any = None
    ) -> graph.FolderDelta:
        return graph.FolderDelta((), (), "folders-now")

    async def message_delta(
        self, mailbox: MailboxAddress, folder_id: FolderId, link: str | None, *, first_page: Any
    ) -> graph.MessageDelta:
        changed = self.news_since.get(link, False)
        records: tuple[MessageRecord, ...] = tuple(self.messages[folder_id]) if changed else ()
        return graph.MessageDelta(records, (), f"after:{len(self.messages[folder_id])}")

    async def list_messages(
        self, mailbox: MailboxAddress, folder_id: FolderId, *, on_page: Any = None
    ) -> list[MessageRecord]:
        if self.fail_next_listing:
            self.fail_next_listing = False
            raise graph.ServiceUnavailableError("listing failed", status=503)
        return await super().list_messages(mailbox, folder_id, on_page=on_page)


class Forgetful:
    async def entry_gone(self, parent_inode: int, name: str) -> None:
        pass

    async def attributes_changed(self, inode: int) -> None:
        pass


async def test_a_change_whose_listing_failed_is_picked_up_by_the_next_poll() -> None:
    source = FlakyGraph()
    inbox_id = FolderId("inbox")
    source.messages[inbox_id] = [message("m1", "Old", attachment("a1", "old.pdf"))]
    namespace: Namespace = await loaded(source)
    directory = await namespace.lookup(ROOT_INODE, "Inbox")
    assert isinstance(directory, DirectoryNode)
    await namespace.entries(directory.inode)
    poller = Poller(source, namespace, Forgetful(), interval=60)  # type: ignore[arg-type]
    await poller.poll()  # the first round: links known from here on

    # New mail: Graph reports it once, to the link the poller holds...
    source.messages[inbox_id].append(message("m2", "New", attachment("a2", "new.pdf")))
    source.news_since = {"after:1": True}
    # ...and the listing that should follow fails.
    source.fail_next_listing = True
    await poller.poll()
    assert sorted(directory.files or {}) == ["Old-old.pdf"]

    await poller.poll()
    assert sorted(directory.files or {}) == ["New-new.pdf", "Old-old.pdf"]

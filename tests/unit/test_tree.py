"""The namespace without a kernel or a server: names, inodes, listings and their changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from exchange_fuse.mail import (
    AttachmentId,
    AttachmentKind,
    AttachmentRecord,
    FolderId,
    FolderRecord,
    MailboxAddress,
    MessageId,
    MessageRecord,
)
from exchange_fuse.tree import (
    ROOT_INODE,
    DirectoryNode,
    FileNode,
    ListingSource,
    Namespace,
    NamespaceOptions,
    NoSuchEntry,
)

MAILBOX = MailboxAddress("ops@example.com")
ROOT = FolderId("root")
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def folder(folder_id: str, name: str, parent: str = "root", **kw: object) -> FolderRecord:
    parent_id = FolderId(parent)
    return FolderRecord(FolderId(folder_id), parent_id, name, **kw)  # type: ignore[arg-type]


def attachment(attachment_id: str, name: str | None, *, inline: bool = False) -> AttachmentRecord:
    return AttachmentRecord(
        AttachmentId(attachment_id), name, "application/pdf", 1000, inline, AttachmentKind.FILE
    )


def message(
    message_id: str, subject: str | None, *attachments: AttachmentRecord, minutes: int = 0
) -> MessageRecord:
    return MessageRecord(
        MessageId(message_id),
        FolderId("inbox"),
        subject,
        T0 + timedelta(minutes=minutes),
        attachments=attachments,
    )


class RecordedMailbox(ListingSource):
    """Serves folder trees and listings from records a test sets up and changes."""

    def __init__(self) -> None:
        self.folders: dict[MailboxAddress, list[FolderRecord]] = {
            MAILBOX: [folder("inbox", "Inbox")]
        }
        self.messages: dict[FolderId, list[MessageRecord]] = {}
        self.listings = 0

    async def get_mailbox_root(self, mailbox: MailboxAddress) -> FolderRecord:
        return FolderRecord(ROOT, None, "Top of Information Store")

    async def list_folder_tree(
        self, mailbox: MailboxAddress, *, include_hidden: bool = False
    ) -> list[FolderRecord]:
        return [f for f in self.folders[mailbox] if include_hidden or not f.is_hidden]

    async def list_messages(
        self,
        mailbox: MailboxAddress,
        folder_id: FolderId,
        *,
        on_page: Callable[[list[MessageRecord]], Awaitable[None]] | None = None,
    ) -> list[MessageRecord]:
        self.listings += 1
        messages = list(self.messages.get(folder_id, []))
        # Two pages, as Graph would send a long listing.
        for page in (messages[: len(messages) // 2], messages[len(messages) // 2 :]):
            if on_page is not None:
                await on_page(page)
        return messages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def loaded(source: RecordedMailbox, **options: object) -> Namespace:
    namespace = Namespace(
        source,
        list(source.folders),
        NamespaceOptions(**options),  # type: ignore[arg-type]
    )
    await namespace.load()
    return namespace


async def names(namespace: Namespace, inode: int) -> list[str]:
    return [name for name, _ in await namespace.entries(inode)]


async def inbox(namespace: Namespace) -> DirectoryNode:
    node = await namespace.lookup(ROOT_INODE, "Inbox")
    assert isinstance(node, DirectoryNode)
    return node


async def test_single_mailbox_is_the_root_and_search_folders_are_left_out() -> None:
    source = RecordedMailbox()
    source.folders[MAILBOX] += [
        folder("inv", "Invoices", parent="inbox"),
        folder("y24", "2024", parent="inv"),
        folder("s", "Unread mail", is_search_folder=True),
        folder("h", "Clutter", is_hidden=True),
    ]
    namespace = await loaded(source)

    assert await names(namespace, ROOT_INODE) == ["Inbox"]
    invoices = await namespace.lookup((await inbox(namespace)).inode, "Invoices")
    assert await names(namespace, invoices.inode) == ["2024"]
    assert namespace.path(await namespace.lookup(invoices.inode, "2024")) == "/Inbox/Invoices/2024"

    with_hidden = await loaded(source, include_hidden_folders=True)
    assert await names(with_hidden, ROOT_INODE) == ["Clutter", "Inbox"]


async def test_several_mailboxes_get_one_directory_each() -> None:
    source = RecordedMailbox()
    other = MailboxAddress("shared@example.com")
    source.folders[other] = [folder("inbox2", "Inbox")]
    namespace = await loaded(source)

    assert sorted(await names(namespace, ROOT_INODE)) == ["ops@example.com", "shared@example.com"]
    shared = await namespace.lookup(ROOT_INODE, "shared@example.com")
    assert await names(namespace, shared.inode) == ["Inbox"]


async def test_duplicates_are_numbered_oldest_first_and_subfolders_keep_their_name() -> None:
    source = RecordedMailbox()
    source.folders[MAILBOX].append(folder("sub", "Daily-report.pdf", parent="inbox"))
    source.messages[FolderId("inbox")] = [
        # Listed newest first, as Graph may: the namespace orders by received time itself.
        message("m3", "Daily", attachment("a3", "report.pdf"), minutes=30),
        message("m2", "Daily", attachment("a2", "report.pdf"), minutes=20),
        message("m1", "Daily", attachment("a1", "report.pdf"), minutes=10),
        message("m0", "Daily", attachment("b1", "report.pdf"), attachment("b2", "report.pdf")),
    ]
    namespace = await loaded(source)
    directory = await inbox(namespace)

    listing = dict(await namespace.entries(directory.inode))
    assert isinstance(listing["Daily-report.pdf"], DirectoryNode)
    files = {
        name: node.attachment.id for name, node in listing.items() if isinstance(node, FileNode)
    }
    assert files == {
        "Daily-report (2).pdf": "b1",
        "Daily-report (3).pdf": "b2",
        "Daily-report (4).pdf": "a1",
        "Daily-report (5).pdf": "a2",
        "Daily-report (6).pdf": "a3",
    }


async def test_inline_attachments_are_hidden_unless_asked_for() -> None:
    source = RecordedMailbox()
    source.messages[FolderId("inbox")] = [
        message(
            "m1", "Hello", attachment("logo", "logo.png", inline=True), attachment("a", "x.csv")
        )
    ]
    assert await names(await loaded(source), (await inbox(await loaded(source))).inode) == [
        "Hello-x.csv"
    ]
    shown = await loaded(source, show_inline=True)
    assert sorted(await names(shown, (await inbox(shown)).inode)) == [
        "Hello-logo.png",
        "Hello-x.csv",
    ]


async def test_names_and_inodes_survive_a_new_listing_and_a_newcomer_takes_a_new_number() -> None:
    source = RecordedMailbox()
    source.messages[FolderId("inbox")] = [
        message("m1", "Scan", attachment("a1", "page.pdf"), minutes=10)
    ]
    namespace = await loaded(source)
    directory = await inbox(namespace)
    first = await namespace.lookup(directory.inode, "Scan-page.pdf")

    # An older message with the same name appears: the name already shown stays put.
    older = message("m0", "Scan", attachment("a0", "page.pdf"), minutes=0)
    added, removed = namespace.apply_listing(
        directory, [older, *source.messages[FolderId("inbox")]]
    )

    assert [node.name for node in added] == ["Scan-page (2).pdf"]
    assert removed == []
    again = await namespace.lookup(directory.inode, "Scan-page.pdf")
    assert again.inode == first.inode
    assert isinstance(again, FileNode) and again.attachment.id == "a1"


async def test_a_vanished_attachment_lingers_for_lookup_and_its_name_is_not_reused_early() -> None:
    clock = Clock()
    source = RecordedMailbox()
    gone = message("m1", "Report", attachment("a1", "q1.pdf"))
    source.messages[FolderId("inbox")] = [gone]
    namespace = Namespace(source, [MAILBOX], NamespaceOptions(linger=60), clock=clock)
    await namespace.load()
    directory = await inbox(namespace)
    old = await namespace.lookup(directory.inode, "Report-q1.pdf")
    namespace.remember(old.inode)

    namespace.apply_listing(directory, [])
    assert await names(namespace, directory.inode) == []
    # rsync was handed the name a moment ago: it must still resolve.
    assert (await namespace.lookup(directory.inode, "Report-q1.pdf")).inode == old.inode

    clock.now += 61
    with pytest.raises(NoSuchEntry):
        await namespace.lookup(directory.inode, "Report-q1.pdf")

    # A new attachment with the same text while the kernel still holds the old inode.
    newcomer = message("m2", "Report", attachment("a2", "q1.pdf"), minutes=5)
    added, _ = namespace.apply_listing(directory, [newcomer])
    assert added[0].name == "Report-q1 (2).pdf"
    assert added[0].inode != old.inode

    # Once the kernel forgot the old inode, the plain name is free for later arrivals.
    namespace.forget(old.inode, 1)
    later = message("m3", "Report", attachment("a3", "q1.pdf"), minutes=9)
    added, _ = namespace.apply_listing(directory, [newcomer, later])
    assert [node.name for node in added] == ["Report-q1.pdf"]


async def test_include_and_exclude_globs_and_excluded_folders() -> None:
    source = RecordedMailbox()
    source.folders[MAILBOX] += [folder("junk", "Junk"), folder("old", "Old", parent="junk")]
    source.messages[FolderId("inbox")] = [
        message(
            "m1", "A", attachment("1", "x.pdf"), attachment("2", "y.csv"), attachment("3", "z.pdf")
        )
    ]
    namespace = await loaded(
        source, include=("*.pdf",), exclude=("*z.pdf",), exclude_folders=("Junk",)
    )
    assert await names(namespace, ROOT_INODE) == ["Inbox"]
    assert await names(namespace, (await inbox(namespace)).inode) == ["A-x.pdf"]


async def test_a_folder_is_listed_once_and_only_when_looked_at() -> None:
    source = RecordedMailbox()
    source.messages[FolderId("inbox")] = [message("m1", "A", attachment("1", "x.pdf"))]
    namespace = await loaded(source)
    assert source.listings == 0
    directory = await inbox(namespace)
    await namespace.entries(directory.inode)
    await namespace.lookup(directory.inode, "A-x.pdf")
    assert source.listings == 1
    assert namespace.watched_directories() == [directory]


async def test_renamed_folder_keeps_its_inode() -> None:
    source = RecordedMailbox()
    namespace = await loaded(source)
    before = await inbox(namespace)
    changed = namespace.replace_folder_tree(MAILBOX, [folder("inbox", "Posteingang")])
    after = await namespace.lookup(ROOT_INODE, "Posteingang")
    assert after.inode == before.inode
    assert changed == [namespace.root]
    with pytest.raises(NoSuchEntry):
        await namespace.lookup(ROOT_INODE, "Inbox")


async def test_shown_folder_names_never_move_to_another_folder() -> None:
    source = RecordedMailbox()
    source.folders[MAILBOX] += [folder("dash", "a-b"), folder("colon", "a:b")]
    namespace = await loaded(source)
    before = {name: node.inode for name, node in await namespace.entries(ROOT_INODE)}
    assert {"a-b", "a-b (2)"} <= before.keys()

    # A newcomer that sorts first and makes the same name gets the next number.
    namespace.replace_folder_tree(MAILBOX, [*source.folders[MAILBOX], folder("quote", 'a"b')])
    after = {name: node.inode for name, node in await namespace.entries(ROOT_INODE)}
    assert after["a-b"] == before["a-b"] and after["a-b (2)"] == before["a-b (2)"]
    assert "a-b (3)" in after


async def test_a_new_folder_never_takes_the_name_of_a_file_already_shown() -> None:
    source = RecordedMailbox()
    source.messages[FolderId("inbox")] = [message("m1", "Plan", attachment("a", "notes.txt"))]
    namespace = await loaded(source)
    directory = await inbox(namespace)
    shown = await namespace.lookup(directory.inode, "Plan-notes.txt")

    namespace.replace_folder_tree(
        MAILBOX, [*source.folders[MAILBOX], folder("sub", "Plan-notes.txt", parent="inbox")]
    )
    assert (await namespace.lookup(directory.inode, "Plan-notes.txt")).inode == shown.inode
    assert isinstance(await namespace.lookup(directory.inode, "Plan-notes.txt (2)"), DirectoryNode)


async def test_thousands_of_same_named_attachments_get_every_number_once() -> None:
    source = RecordedMailbox()
    source.messages[FolderId("inbox")] = [
        message(f"m{n:05}", "Daily report", attachment(f"a{n}", "report.csv"), minutes=n)
        for n in range(3000)
    ]
    namespace = await loaded(source)
    names = await names_in(namespace)
    assert names[0] == "Daily report-report.csv"
    assert names[-1] == "Daily report-report (3000).csv"
    assert len(set(names)) == 3000


async def names_in(namespace: Namespace) -> list[str]:
    return await names(namespace, (await inbox(namespace)).inode)


async def test_directory_times_are_fixed() -> None:
    source = RecordedMailbox()
    source.messages[FolderId("inbox")] = [message("m1", "A", attachment("1", "x.pdf"))]
    namespace = await loaded(source)
    directory = await inbox(namespace)
    await namespace.entries(directory.inode)
    namespace.apply_listing(directory, [])
    assert directory.mtime == namespace.root.mtime == 0.0

"""The Graph client against the emulator: listings, paging, downloads, deletes, delta."""

from __future__ import annotations

import email.message
from datetime import UTC, datetime

import pytest

from exchange_fuse import graph
from exchange_fuse.mail import AttachmentId, AttachmentKind, FolderId, MessageId, MessageRecord
from tests.graph.conftest import (
    BIG_BIN,
    DEEP_CHILDREN,
    DELTA_MESSAGES,
    LOGO_PNG,
    MAILBOX,
    PAGED_MESSAGES,
    REPORT_PDF,
    WIDE_CHILDREN,
    folder_named,
    graph_client,
    paged_content,
)
from tests.support.emulator import Emulator


async def download_all(
    client: graph.GraphClient, message_id: MessageId, attachment_id: AttachmentId
) -> bytes:
    async with client.download(MAILBOX, message_id, attachment_id) as download:
        body = b"".join([chunk async for chunk in download.chunks()])
        assert download.content_length == len(body)
    return body


async def messages_in(client: graph.GraphClient, name: str) -> list[MessageRecord]:
    folders = await client.list_folder_tree(MAILBOX)
    return await client.list_messages(MAILBOX, folder_named(folders, name).id)


async def test_the_mailbox_root_is_top_of_information_store(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        root = await client.get_mailbox_root(MAILBOX)

    assert root.display_name == "Top of Information Store"
    assert root.parent_id is None


async def test_folder_tree_follows_every_page_at_every_level(emulator: Emulator) -> None:
    """With 5 folders a page, both the 13 children of Wide and the 12 of Sub 00 need paging."""
    async with graph_client(emulator, page_size=5) as client:
        root = await client.get_mailbox_root(MAILBOX)
        folders = await client.list_folder_tree(MAILBOX)

    wide = folder_named(folders, "Wide")
    sub = folder_named(folders, "Sub 00")
    assert wide.parent_id == root.id
    assert sorted(f.display_name for f in folders if f.parent_id == wide.id) == [
        f"Sub {index:02d}" for index in range(WIDE_CHILDREN)
    ]
    assert sorted(f.display_name for f in folders if f.parent_id == sub.id) == [
        f"Leaf {index:02d}" for index in range(DEEP_CHILDREN)
    ]
    # Parents come before their children, and no folder is listed twice.
    positions = {folder.id: index for index, folder in enumerate(folders)}
    assert len(positions) == len(folders)
    for folder in folders:
        if folder.parent_id != root.id:
            assert folder.parent_id is not None
            assert positions[folder.parent_id] < positions[folder.id]
    assert {"Inbox", "Paged", "Kinds", "Scratch"} <= {f.display_name for f in folders}


async def test_hidden_folders_only_when_asked(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        default = await client.list_folder_tree(MAILBOX)
        everything = await client.list_folder_tree(MAILBOX, include_hidden=True)

    assert "Hidden away" not in {folder.display_name for folder in default}
    assert folder_named(everything, "Hidden away").is_hidden


async def test_messages_follow_every_page_with_attachments_expanded(emulator: Emulator) -> None:
    async with graph_client(emulator, page_size=4) as client:
        messages = await messages_in(client, "Paged")
        first = next(m for m in messages if m.subject == "Paged 00")
        content = await download_all(client, first.id, first.attachments[0].id)

    assert sorted(message.subject or "" for message in messages) == [
        f"Paged {index:02d}" for index in range(PAGED_MESSAGES)
    ]
    assert all(len(message.attachments) == 1 for message in messages)
    assert first.received == datetime(2024, 2, 1, 8, 0, tzinfo=UTC)
    assert first.sender == "reports@example.com"
    attachment = first.attachments[0]
    assert attachment.name == "m00.txt"
    assert attachment.kind is AttachmentKind.FILE
    assert attachment.content_type == "text/plain"
    # Graph's size counts metadata too: an estimate, larger than the content.
    assert attachment.size_estimate > len(paged_content(0))
    assert content == paged_content(0)


async def test_ids_with_slash_plus_and_equals_work_in_every_call(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        messages = await messages_in(client, "Kinds")
        message = next(m for m in messages if m.subject == "All kinds")
        report = next(a for a in message.attachments if a.name == "report.pdf")
        listed = await client.list_attachments(MAILBOX, message.id)
        content = await download_all(client, message.id, report.id)

    ids = [message.id, report.id]
    assert all(any(c in identifier for c in "/+=") for identifier in ids), ids
    assert {a.id for a in listed} == {a.id for a in message.attachments}
    assert content == REPORT_PDF


async def test_every_attachment_kind_is_told_apart(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        messages = await messages_in(client, "Kinds")

    by_name = {a.name: a for m in messages for a in m.attachments}
    assert by_name["report.pdf"].kind is AttachmentKind.FILE
    assert (by_name["Forwarded"].kind, by_name["Forwarded"].item_type) == (
        AttachmentKind.ITEM,
        "message",
    )
    assert by_name["Review"].item_type == "event"
    assert by_name["Dana Fischer"].item_type == "contact"
    plan = by_name["Plan.xlsx"]
    assert plan.kind is AttachmentKind.REFERENCE
    assert plan.source_url == "https://contoso.example/sites/plans/Plan.xlsx"
    # Graph's hasAttachments is false for inline-only mail; the listing must not depend on it.
    assert by_name["logo.png"].is_inline


async def test_download_is_byte_exact_for_each_kind(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        messages = await messages_in(client, "Kinds") + await messages_in(client, "Big")
        files = {a.name: (m.id, a.id) for m in messages for a in m.attachments}

        assert await download_all(client, *files["report.pdf"]) == REPORT_PDF
        assert await download_all(client, *files["logo.png"]) == LOGO_PNG
        assert await download_all(client, *files["big.bin"]) == BIG_BIN
        event = await download_all(client, *files["Review"])
        contact = await download_all(client, *files["Dana Fischer"])
        mail = await download_all(client, *files["Forwarded"])

        with pytest.raises(graph.NotSupportedError) as refused:
            await download_all(client, *files["Plan.xlsx"])

    assert event.startswith(b"BEGIN:VCALENDAR")
    assert contact.startswith(b"BEGIN:VCARD")
    assert b"Subject: Forwarded" in mail
    assert refused.value.status == 405
    assert client.stats.bytes_downloaded >= len(BIG_BIN)


async def test_delete_attachment_then_message(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        message = next(m for m in await messages_in(client, "Scratch") if m.subject == "Scratch 0")
        first, second = message.attachments

        await client.delete_attachment(MAILBOX, message.id, first.id)
        remaining = await client.list_attachments(MAILBOX, message.id)
        with pytest.raises(graph.NotFoundError):
            await download_all(client, message.id, first.id)
        await client.delete_message(MAILBOX, message.id)
        after = await messages_in(client, "Scratch")
        with pytest.raises(graph.NotFoundError) as gone:
            await client.list_attachments(MAILBOX, message.id)

    assert [a.id for a in remaining] == [second.id]
    assert message.id not in {m.id for m in after}
    assert gone.value.status == 404


async def test_move_keeps_the_immutable_id(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        folders = await client.list_folder_tree(MAILBOX)
        scratch = folder_named(folders, "Scratch")
        elsewhere = folder_named(folders, "Elsewhere")
        message = next(
            m for m in await client.list_messages(MAILBOX, scratch.id) if m.subject == "Scratch 1"
        )

        moved_id = await client.move_message(MAILBOX, message.id, elsewhere.id)
        there = await client.list_messages(MAILBOX, elsewhere.id)
        here = await client.list_messages(MAILBOX, scratch.id)

    assert moved_id == message.id
    assert [m.id for m in there] == [message.id]
    assert there[0].folder_id == elsewhere.id
    assert message.id not in {m.id for m in here}


async def test_message_delta_sees_new_and_removed_mail(emulator: Emulator) -> None:
    async with graph_client(emulator, page_size=3) as client:
        folders = await client.list_folder_tree(MAILBOX)
        folder = folder_named(folders, "Delta")
        first = await client.message_delta(MAILBOX, folder.id, None)
        quiet = await client.message_delta(MAILBOX, folder.id, first.delta_link)

        new_id = emulator.add_message(MAILBOX, folder.id, _mime("Arrived later"))
        gone = next(m for m in first.changed if m.subject == "Delta 5")
        emulator.delete_message(MAILBOX, gone.id)
        second = await client.message_delta(MAILBOX, folder.id, quiet.delta_link)

    assert sorted(m.subject or "" for m in first.changed) == [
        f"Delta {index}" for index in range(DELTA_MESSAGES)
    ]
    assert all(len(m.attachments) == 1 for m in first.changed)
    assert (quiet.changed, quiet.removed) == ((), ())
    assert [m.subject for m in second.changed] == ["Arrived later"]
    assert second.changed[0].id == new_id
    assert [a.name for a in second.changed[0].attachments] == ["late.txt"]
    assert second.removed == (gone.id,)


async def test_expired_delta_link_raises_sync_state_expired(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        folders = await client.list_folder_tree(MAILBOX)
        kinds = folder_named(folders, "Kinds")
        first = await client.message_delta(MAILBOX, kinds.id, None)
        emulator.expire_delta_tokens()
        with pytest.raises(graph.SyncStateExpiredError) as expired:
            await client.message_delta(MAILBOX, kinds.id, first.delta_link)
        again = await client.message_delta(MAILBOX, kinds.id, None)

    assert expired.value.status == 410
    assert {m.subject for m in again.changed} == {"All kinds", "Inline only"}


async def test_folder_delta_lists_folders_then_changes(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        first = await client.folder_delta(MAILBOX, None)
        elsewhere = folder_named(list(first.changed), "Elsewhere")
        created = FolderId(emulator.create_folder(MAILBOX, elsewhere.id, "Created later"))
        second = await client.folder_delta(MAILBOX, first.delta_link)

    assert {"Wide", "Leaf 11", "Paged"} <= {folder.display_name for folder in first.changed}
    assert created in {folder.id for folder in second.changed}
    assert folder_named(list(second.changed), "Created later").parent_id == elsewhere.id


def _mime(subject: str) -> bytes:
    message = email.message.EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = str(MAILBOX)
    message["Subject"] = subject
    message["Date"] = "Mon, 01 Jul 2024 10:00:00 +0000"
    message.set_content("body\n")
    message.add_attachment(b"late\n", maintype="text", subtype="plain", filename="late.txt")
    return bytes(message)

"""The Graph client under throttling, server errors, cut connections and token loss.

Faults are injected by the emulator (seeded, so each test sees the same draws) and reset
after every test.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from exchange_fuse import graph
from exchange_fuse.mail import AttachmentId, MailboxAddress, MessageId, MessageRecord
from tests.graph.conftest import (
    BIG_BIN,
    DENIED,
    MAILBOX,
    ON_PREMISES,
    PAGED_MESSAGES,
    REPORT_PDF,
    folder_named,
    graph_client,
    paged_content,
    token_provider,
)
from tests.support.emulator import Emulator

# Retries that back off briefly, so the tests stay fast.
QUICK: dict[str, Any] = {"backoff_initial": 0.02, "backoff_max": 0.2}


async def messages_in(client: graph.GraphClient, name: str) -> list[MessageRecord]:
    folders = await client.list_folder_tree(MAILBOX)
    return await client.list_messages(MAILBOX, folder_named(folders, name).id)


async def fetch(
    client: graph.GraphClient, message_id: MessageId, attachment_id: AttachmentId
) -> bytes:
    async with client.download(MAILBOX, message_id, attachment_id) as download:
        body = b"".join([chunk async for chunk in download.chunks()])
        assert download.content_length == len(body)
    return body


async def fetch_named(client: graph.GraphClient, folder: str, name: str) -> bytes:
    messages = await messages_in(client, folder)
    message, attachment = next((m, a) for m in messages for a in m.attachments if a.name == name)
    return await fetch(client, message.id, attachment.id)


def warnings_from_client(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "exchange_fuse.graph" and record.levelno >= logging.WARNING
    ]


async def test_sixteen_readers_never_have_more_than_four_requests_in_flight(
    emulator: Emulator,
) -> None:
    async with graph_client(emulator, **QUICK) as client:
        messages = await messages_in(client, "Paged")
        emulator.set_faults(latency_ms=30, bandwidth_bytes_per_s=20_000)
        emulator.reset_stats()
        contents: dict[str, bytes] = {}

        async def read(message: MessageRecord) -> None:
            contents[message.subject or ""] = await fetch(
                client, message.id, message.attachments[0].id
            )

        async with trio.open_nursery() as nursery:
            for message in messages[:16]:
                nursery.start_soon(read, message)
        served = emulator.stats()

    assert len(contents) == 16
    for subject, content in contents.items():
        assert content == paged_content(int(subject.split()[-1]))
    assert served["peak_in_flight"] == 4
    assert client.stats.peak_in_flight == 4


async def test_server_errors_are_retried_until_the_answer_comes(emulator: Emulator) -> None:
    emulator.set_faults(error_rates={"503": 0.25, "504": 0.1, "500": 0.1})
    async with graph_client(emulator, page_size=5, **QUICK) as client:
        paged = await messages_in(client, "Paged")
        report = await fetch_named(client, "Kinds", "report.pdf")

    assert len(paged) == PAGED_MESSAGES
    assert report == REPORT_PDF
    assert client.stats.server_errors > 0
    assert client.stats.retries >= client.stats.server_errors
    assert client.stats.failures == 0


async def test_retry_after_is_honoured(emulator: Emulator) -> None:
    async with graph_client(emulator, **QUICK) as client:
        await client.get_mailbox_root(MAILBOX)  # token and connection ready
        emulator.set_faults(error_rates={"503": 0.5}, error_retry_after_s=1)
        started = trio.current_time()
        for _ in range(4):
            await client.get_mailbox_root(MAILBOX)
        elapsed = trio.current_time() - started

    assert client.stats.server_errors > 0
    # Each 503 asked for a one-second wait; the quick backoff alone would take far less.
    assert elapsed >= client.stats.server_errors * 1.0 - 0.05


async def test_cut_connections_give_one_seamless_stream(emulator: Emulator) -> None:
    async with graph_client(emulator, **QUICK) as client:
        messages = await messages_in(client, "Big")
        big = messages[0]
        emulator.set_faults(cut_rate=0.5)
        emulator.reset_stats()
        contents = [await fetch(client, big.id, big.attachments[0].id) for _ in range(3)]
        served = emulator.stats()

    assert all(content == BIG_BIN for content in contents)
    assert served["cut_responses"] > 0
    assert client.stats.retries >= served["cut_responses"]


async def test_a_body_that_never_completes_fails_instead_of_ending_short(
    emulator: Emulator,
) -> None:
    async with graph_client(emulator, retry_attempts=4, **QUICK) as client:
        messages = await messages_in(client, "Kinds")
        message, report = next(
            (m, a) for m in messages for a in m.attachments if a.name == "report.pdf"
        )
        emulator.set_faults(cut_rate=1.0)
        received = bytearray()
        with pytest.raises(graph.TransportError):
            async with client.download(MAILBOX, message.id, report.id) as download:
                async for chunk in download.chunks():
                    received.extend(chunk)

    assert len(received) < len(REPORT_PDF)
    assert REPORT_PDF.startswith(received)


async def test_spent_retry_budget_raises_a_typed_error_once_and_in_time(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with graph_client(emulator, retry_attempts=4, retry_timeout=5, **QUICK) as client:
        await client.get_mailbox_root(MAILBOX)
        emulator.set_faults(error_rates={"503": 1.0})
        emulator.reset_stats()
        caplog.clear()
        started = trio.current_time()
        with pytest.raises(graph.ServiceUnavailableError) as failed:
            await client.get_mailbox_root(MAILBOX)
        elapsed = trio.current_time() - started
        served = emulator.stats()

    assert failed.value.status == 503
    assert failed.value.code == "ServiceUnavailable"
    assert failed.value.request_id
    assert failed.value.attempts == 4
    assert served["requests_by_status"] == {"503": 4}
    assert elapsed < 5
    assert len(warnings_from_client(caplog)) == 1


async def test_a_retry_after_longer_than_the_budget_fails_at_once(emulator: Emulator) -> None:
    async with graph_client(emulator, retry_timeout=3, **QUICK) as client:
        await client.get_mailbox_root(MAILBOX)
        emulator.set_faults(throttle_rate=1.0, throttle_retry_after_s=30)
        started = trio.current_time()
        with pytest.raises(graph.ThrottledError) as throttled:
            await client.get_mailbox_root(MAILBOX)
        elapsed = trio.current_time() - started

    assert throttled.value.status == 429
    assert throttled.value.retry_after == 30
    assert throttled.value.attempts == 1
    assert elapsed < 1


async def test_no_answer_in_time_is_a_timeout(emulator: Emulator) -> None:
    async with graph_client(emulator, retry_attempts=2, request_timeout=0.3, **QUICK) as client:
        await client.get_mailbox_root(MAILBOX)
        emulator.set_faults(latency_ms=1000)
        started = trio.current_time()
        with pytest.raises(graph.GraphTimeoutError):
            await client.get_mailbox_root(MAILBOX)
        elapsed = trio.current_time() - started

    assert elapsed < 1.5
    # Let the emulator finish the abandoned requests before the next test.
    emulator.reset_faults()
    with trio.fail_after(5):
        while emulator.stats()["in_flight"]:
            await trio.sleep(0.05)


async def test_a_revoked_token_is_replaced_once_for_all_callers(emulator: Emulator) -> None:
    async with (
        token_provider(emulator) as tokens,
        graph.GraphClient(
            emulator.graph_url, tokens, ca_bundle=emulator.ca_bundle, **QUICK
        ) as client,
    ):
        await client.get_mailbox_root(MAILBOX)
        emulator.revoke_tokens()
        roots = []

        async def ask() -> None:
            roots.append(await client.get_mailbox_root(MAILBOX))

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(ask)

    assert len(roots) == 16
    assert tokens.acquisitions == 2
    assert client.stats.token_refreshes >= 1
    assert client.stats.failures == 0


async def test_short_lived_tokens_are_renewed_without_failures(emulator: Emulator) -> None:
    emulator.set_faults(token_lifetime_s=1)
    async with (
        token_provider(emulator) as tokens,
        graph.GraphClient(
            emulator.graph_url, tokens, ca_bundle=emulator.ca_bundle, **QUICK
        ) as client,
    ):
        for _ in range(3):
            await client.get_mailbox_root(MAILBOX)
            await trio.sleep(0.6)

    assert tokens.acquisitions >= 2
    assert client.stats.failures == 0


async def test_access_policy_denial_is_access_denied(emulator: Emulator) -> None:
    emulator.set_faults(denied_mailboxes=[DENIED])
    async with graph_client(emulator) as client:
        with pytest.raises(graph.AccessDeniedError) as denied:
            await client.get_mailbox_root(DENIED)
        root = await client.get_mailbox_root(MAILBOX)

    assert denied.value.status == 403
    assert denied.value.code == "ErrorAccessDenied"
    assert denied.value.attempts == 1
    assert "access policy" in denied.value.hint
    assert root.display_name == "Top of Information Store"


async def test_a_mailbox_outside_exchange_online_is_unavailable(emulator: Emulator) -> None:
    emulator.set_faults(disabled_mailboxes=[ON_PREMISES])
    async with graph_client(emulator) as client:
        with pytest.raises(graph.MailboxUnavailableError) as unavailable:
            await client.list_folder_tree(ON_PREMISES)

    assert unavailable.value.code == "MailboxNotEnabledForRESTAPI"
    assert "Exchange Online" in unavailable.value.hint


async def test_an_unknown_mailbox_is_not_served(emulator: Emulator) -> None:
    async with graph_client(emulator) as client:
        with pytest.raises((graph.MailboxUnavailableError, graph.NotFoundError)) as unknown:
            await client.get_mailbox_root(MailboxAddress("nobody@example.com"))

    assert unknown.value.status == 404
    assert unknown.value.attempts == 1

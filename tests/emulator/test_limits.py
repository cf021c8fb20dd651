"""Outlook's limits and the injected faults, switched at start and at run time."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import trio

from tests.emulator.conftest import DEMO
from tests.support.emulator import Emulator, enc, running_emulator

USER = f"/users/{DEMO}"


async def _parallel(emulator: Emulator, count: int, url: str) -> list[httpx.Response]:
    responses: list[httpx.Response] = []
    async with emulator.async_client() as client:

        async def one() -> None:
            responses.append(await client.get(url))

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    return responses


async def test_a_fifth_concurrent_request_is_throttled(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(latency_ms=400)

    responses = await _parallel(fresh_demo, 6, f"{USER}/mailFolders")

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 429, 429]
    throttled = next(r for r in responses if r.status_code == 429)
    assert throttled.headers["retry-after"] == "1"
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled.json()["error"]["message"]
    stats = fresh_demo.stats()
    assert stats["peak_in_flight"] == 4
    assert stats["requests"]["GET /users/{mailbox}/mailFolders"] == {"200": 4}


async def test_concurrency_limit_is_a_start_flag(tmp_path: Path) -> None:
    with running_emulator(
        tmp_path, "--demo", "--max-concurrency", "2", "--latency-ms", "300"
    ) as emulator:
        responses = await _parallel(emulator, 3, f"{USER}/mailFolders")
    assert sorted(r.status_code for r in responses) == [200, 200, 429]


def _inbox_value_url(emulator: Emulator) -> str:
    with emulator.client() as client:
        message = client.get(
            f"{USER}/mailFolders/inbox/messages",
            params={"$filter": "hasAttachments eq true", "$expand": "attachments($select=id)"},
        ).json()["value"][0]
    attachment = message["attachments"][0]
    return f"{USER}/messages/{enc(message['id'])}/attachments/{enc(attachment['id'])}/$value"


def test_error_rates_with_and_without_retry_after(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(error_rates={"503": 1.0}, error_retry_after_s=3, seed=1)
    with fresh_demo.client() as client:
        with_header = client.get(f"{USER}/mailFolders")
        fresh_demo.set_faults(error_rates={"504": 1.0}, error_retry_after_s=None)
        without = client.get(f"{USER}/mailFolders")
        fresh_demo.reset_faults()
        healthy = client.get(f"{USER}/mailFolders")

    assert with_header.status_code == 503
    assert with_header.headers["retry-after"] == "3"
    assert with_header.json()["error"]["code"] == "ServiceUnavailable"
    assert without.status_code == 504
    assert "retry-after" not in without.headers
    assert healthy.status_code == 200


def test_error_rate_is_a_share_of_requests(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(error_rates={"503": 0.5}, seed=7)
    with fresh_demo.client() as client:
        statuses = [client.get(f"{USER}/mailFolders/inbox").status_code for _ in range(60)]
    assert 15 <= statuses.count(503) <= 45
    assert statuses.count(503) + statuses.count(200) == 60


def test_random_throttling(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(throttle_rate=1.0, throttle_retry_after_s=5)
    with fresh_demo.client() as client:
        response = client.get(f"{USER}/mailFolders")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "ApplicationThrottled"


def test_cut_connections_end_early(fresh_demo: Emulator) -> None:
    url = _inbox_value_url(fresh_demo)
    with fresh_demo.client() as client:
        whole = client.get(url)
        fresh_demo.set_faults(cut_rate=1.0, seed=3)
        try:
            client.get(url)
        except httpx.RemoteProtocolError as error:
            cut = error
        else:
            raise AssertionError("the response was not cut")
        fresh_demo.set_faults(cut_rate=0.0)
        again = client.get(url)
    assert "peer closed connection" in str(cut) or "incomplete" in str(cut).lower()
    assert again.content == whole.content
    assert fresh_demo.stats()["cut_responses"] == 1


def test_latency_and_bandwidth(fresh_demo: Emulator) -> None:
    url = _inbox_value_url(fresh_demo)
    with fresh_demo.client() as client:
        size = len(client.get(url).content)
        fresh_demo.set_faults(latency_ms=300)
        started = time.monotonic()
        client.get(f"{USER}/mailFolders/inbox")
        slow = time.monotonic() - started
        fresh_demo.set_faults(latency_ms=0, bandwidth_bytes_per_s=size * 2)
        started = time.monotonic()
        paced = client.get(url)
        elapsed = time.monotonic() - started
    assert slow >= 0.3
    assert len(paced.content) == size
    assert 0.4 <= elapsed < 3


def test_access_policy_and_rest_disabled_mailboxes(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(denied_mailboxes=[DEMO])
    with fresh_demo.client() as client:
        denied = client.get(f"{USER}/mailFolders")
        fresh_demo.set_faults(denied_mailboxes=[], disabled_mailboxes=[DEMO.upper()])
        disabled = client.get(f"{USER}/mailFolders")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ErrorAccessDenied"
    assert denied.json()["error"]["message"].startswith("Access to OData is disabled")
    assert disabled.status_code == 404
    assert disabled.json()["error"]["code"] == "MailboxNotEnabledForRESTAPI"


async def test_denied_at_start(tmp_path: Path) -> None:
    with (
        running_emulator(tmp_path, "--demo", "--deny", DEMO) as emulator,
        emulator.client() as client,
    ):
        response = client.get(f"{USER}/mailFolders")
    assert response.status_code == 403


def test_request_budget_per_mailbox(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(mailbox_budget=3, budget_window_s=60)
    with fresh_demo.client() as client:
        statuses = [client.get(f"{USER}/mailFolders").status_code for _ in range(4)]
        over = client.get(f"{USER}/mailFolders")
    assert statuses == [200, 200, 200, 429]
    assert "RequestRate" in over.json()["error"]["message"]
    assert 1 <= int(over.headers["retry-after"]) <= 60


def test_bad_fault_settings_are_refused(demo: Emulator) -> None:
    for bad in ({"cut_rate": 2}, {"error_rates": {"418": 0.5}}, {"colour": "blue"}):
        try:
            demo.set_faults(**bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")
    assert demo.set_faults()["max_concurrency"] == 4


def test_stats_count_routes_statuses_and_bytes(fresh_demo: Emulator) -> None:
    fresh_demo.reset_stats()
    url = _inbox_value_url(fresh_demo)
    with fresh_demo.client() as client:
        size = len(client.get(url).content)
        client.get(f"{USER}/mailFolders/nope-not-an-id")
    stats = fresh_demo.stats()
    value_route = "GET /users/{mailbox}/messages/{message}/attachments/{attachment}/$value"
    assert stats["requests"][value_route] == {"200": 1}
    assert stats["requests_by_status"]["400"] == 1
    assert stats["bytes_sent"] >= size
    assert stats["peak_in_flight"] >= 1
    assert stats["in_flight"] == 0


def test_reset_returns_to_the_start_settings(tmp_path: Path) -> None:
    with running_emulator(
        tmp_path, "--demo", "--max-concurrency", "2", "--quirk", "special_ids=off"
    ) as emulator:
        changed = emulator.set_faults(max_concurrency=8, latency_ms=5)
        reset = emulator.reset_faults()
    assert changed["max_concurrency"] == 8
    assert reset["max_concurrency"] == 2
    assert reset["latency_ms"] == 0
    assert reset["quirks"]["special_ids"] is False

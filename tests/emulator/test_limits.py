"""Outlook's limits and the injected faults, switched at start and at run time."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.emulator.conftest import DEMO
from tests.support.emulator import Emulator, running_emulator

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

"""The generator at scale: 100,000 messages paged through, and full-speed parallel downloads."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest
import trio

from tests.support.emulator import Emulator, enc, running_emulator

BIG = "big@example.com"
EXPAND = "attachments($select=id,name,contentType,size,isInline,lastModifiedDateTime)"

pytestmark = pytest.mark.slow


def _rss_kib(emulator: Emulator) -> int:
    ps = subprocess.run(
        ["ps", "-o", "rss=", "-p", str(emulator.process.pid)], capture_output=True, text=True
    )
    return int(ps.stdout.strip())


def test_hundred_thousand_messages_page_through(tmp_path: Path) -> None:
    started = time.monotonic()
    spec = f"address={BIG},folders=5,messages=20000,attachments=1-3,size=1k-256k,seed=7"
    with running_emulator(tmp_path, "--generate", spec) as emulator:
        assert time.monotonic() - started < 10
        folders = [f for f in emulator.list_folders(BIG) if f["displayName"].startswith("Folder")]
        assert [f["totalItemCount"] for f in folders] == [20000] * 5

        seen: set[str] = set()
        pages = 0
        with emulator.client() as client:
            url: str | None = f"/users/{BIG}/mailFolders/{enc(folders[0]['id'])}/messages"
            params: dict[str, str] | None = {
                "$top": "1000",
                "$select": "subject,receivedDateTime",
                "$expand": EXPAND,
            }
            while url:
                body = client.get(url, params=params).json()
                params = None
                pages += 1
                seen.update(m["id"] for m in body["value"])
                assert all(1 <= len(m["attachments"]) <= 3 for m in body["value"])
                url = body.get("@odata.nextLink")
            wide = client.get(f"/users/{BIG}/messages", params={"$top": "1"}).json()

        assert len(seen) == 20000
        assert pages == 20
        assert "@odata.nextLink" in wide
        # Every message was built for the mailbox-wide listing, and memory stays modest.
        assert _rss_kib(emulator) < 1_000_000


async def test_four_parallel_downloads_at_full_speed(tmp_path: Path) -> None:
    spec = f"address={BIG},folders=1,messages=4,attachments=1,size=32m,seed=3"
    with running_emulator(tmp_path, "--generate", spec) as emulator:
        folder = next(f for f in emulator.list_folders(BIG) if f["displayName"] == "Folder 01")
        messages = emulator.list_messages(BIG, folder["id"])
        urls = [
            f"/users/{BIG}/messages/{enc(m['id'])}/attachments/"
            f"{enc(m['attachments'][0]['id'])}/$value"
            for m in messages
        ]
        digests: dict[str, str] = {}
        async with emulator.async_client(timeout=120) as client:

            async def fetch(url: str) -> None:
                digest = hashlib.sha256()
                async with client.stream("GET", url) as response:
                    assert response.status_code == 200
                    assert response.headers["content-length"] == str(32 * 1024 * 1024)
                    async for chunk in response.aiter_raw():
                        digest.update(chunk)
                digests[url] = digest.hexdigest()

            started = time.monotonic()
            async with trio.open_nursery() as nursery:
                for url in urls:
                    nursery.start_soon(fetch, url)
            elapsed = time.monotonic() - started
            first = dict(digests)
            await fetch(urls[0])

        stats = emulator.stats()
    assert len(first) == 4
    assert len(set(first.values())) == 4  # each attachment has its own content ...
    assert digests[urls[0]] == first[urls[0]]  # ... and the same on every download
    assert stats["peak_in_flight"] == 4
    # 128 MiB over loopback TLS on a shared machine: well above 20 MB/s.
    assert 128 * 1024 * 1024 / elapsed > 20_000_000

"""The attachment content cache on real files: streaming fills, crashes, limits, eviction."""

from __future__ import annotations

import os
import random
import re
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from exchange_fuse.cache import (
    CachedEntry,
    CacheInUseError,
    ContentCache,
    Fill,
    IncompleteContentError,
)

MiB = 1 << 20
ENTRY_FILE = re.compile(r"[0-9a-f]{64}\.[0-9]+")


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def entry_files(directory: Path) -> list[Path]:
    return sorted(path for path in (directory / "entries").rglob("*") if path.is_file())


def partial_files(directory: Path) -> list[Path]:
    return sorted((directory / "partial").iterdir())


async def store(cache: ContentCache, key: str, data: bytes) -> CachedEntry:
    fill = cache.begin_fill(key, len(data))
    for start in range(0, len(data), 64 * 1024):
        await fill.write(data[start : start + 64 * 1024])
    return await fill.finish()


def read_all(cache: ContentCache, key: str) -> bytes:
    entry = cache.get(key)
    assert entry is not None
    with entry.open() as reader:
        return reader.read(0, entry.size + 1)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


async def test_reader_gets_first_bytes_while_the_download_runs(cache_dir: Path) -> None:
    """A read waits only for its own range, not for the whole download."""
    cache = ContentCache(cache_dir, 10 * MiB)
    data = payload(300_000)
    fill = cache.begin_fill("mbx\0msg\0att", expected_length=len(data))
    got: list[bytes] = []

    async def read_first() -> None:
        got.append(await fill.read(0, 131072))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_first)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []

        await fill.write(data[:100_000])
        await trio.testing.wait_all_tasks_blocked()
        assert got == []

        await fill.write(data[100_000:140_000])
        await trio.testing.wait_all_tasks_blocked()
        assert got == [data[:131072]]
        assert fill.running

    await fill.write(data[140_000:])
    entry = await fill.finish()
    assert entry.size == len(data)
    assert read_all(cache, "mbx\0msg\0att") == data


async def test_concurrent_readers_get_exact_bytes(cache_dir: Path) -> None:
    """Several reads at once, in and out of order, each get exactly their slice."""
    cache = ContentCache(cache_dir, 10 * MiB)
    data = payload(1_000_000, seed=1)
    fill = cache.begin_fill("key")
    ranges = [(0, 131072), (131072, 131072), (524288, 262144), (917504, 131072), (0, 1)]
    ranges += [(999_999, 10), (2_000_000, 4096)]
    got: dict[tuple[int, int], bytes] = {}

    async def read(offset: int, size: int) -> None:
        got[offset, size] = await fill.read(offset, size)

    async with trio.open_nursery() as nursery:
        for offset, size in reversed(ranges):
            nursery.start_soon(read, offset, size)
        await trio.testing.wait_all_tasks_blocked()
        for start in range(0, len(data), 50_000):
            await fill.write(data[start : start + 50_000])
            await trio.testing.wait_all_tasks_blocked()
        # The last two reached past the end: they are answered only once the
        # content is known to be complete.
        assert (999_999, 10) not in got
        assert (2_000_000, 4096) not in got
        fill.expected_length = len(data)
        await fill.finish()

    for offset, size in ranges:
        assert got[offset, size] == data[offset : offset + size]
    assert got[999_999, 10] == data[-1:]
    assert got[2_000_000, 4096] == b""


async def test_reads_through_a_finished_fill_keep_working(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    data = payload(5000)
    fill = cache.begin_fill("key")
    await fill.write(data)
    await fill.finish()

    assert await fill.read(4000, 4096) == data[4000:]
    assert await fill.read(5000, 10) == b""
    assert await fill.wait_length() == 5000


async def test_second_read_is_served_from_disk(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    data = payload(200_000)
    assert cache.get("key") is None
    assert cache.known_size("key") is None

    await store(cache, "key", data)

    assert cache.known_size("key") == len(data)
    entry = cache.get("key")
    assert entry is not None
    with entry.open() as reader:
        assert reader.size == len(data)
        assert reader.read(0, 131072) == data[:131072]
        assert reader.read(131072, 131072) == data[131072:]
        assert reader.read(len(data), 10) == b""
    assert cache.entry_count == 1
    assert cache.used_bytes == len(data)


async def test_failure_reaches_waiting_readers_and_leaves_no_file(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    fill = cache.begin_fill("key", expected_length=10_000)
    await fill.write(payload(4000))
    cut = ConnectionResetError("connection cut mid-body")
    errors: list[BaseException] = []

    async def read() -> None:
        try:
            await fill.read(0, 8192)
        except ConnectionResetError as error:
            errors.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        fill.fail(cut)

    assert errors == [cut]
    with pytest.raises(ConnectionResetError):
        await fill.read(0, 10)
    with pytest.raises(ConnectionResetError):
        await fill.wait_length()
    assert partial_files(cache_dir) == []
    assert entry_files(cache_dir) == []
    assert cache.get("key") is None
    assert cache.used_bytes == 0

    retry = cache.begin_fill("key")
    await retry.write(b"again")
    await retry.finish()
    assert read_all(cache, "key") == b"again"


async def test_cancelled_download_fails_the_fill(cache_dir: Path) -> None:
    """Leaving ``with fill`` by cancellation fails readers with a clean error."""
    cache = ContentCache(cache_dir, 10 * MiB)
    fill = cache.begin_fill("key")
    with trio.move_on_after(0.01), fill:
        await fill.write(b"x" * 100)
        await trio.sleep_forever()

    with pytest.raises(IncompleteContentError) as caught:
        await fill.read(0, 200)
    assert isinstance(caught.value.__cause__, trio.Cancelled)
    assert cache.running_fill("key") is None
    assert partial_files(cache_dir) == []


async def test_fill_left_unfinished_is_failed(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    with cache.begin_fill("key") as fill:
        await fill.write(b"abc")
    with pytest.raises(IncompleteContentError):
        await fill.read(0, 3)
    assert cache.get("key") is None


@pytest.mark.parametrize("announced_late", [False, True])
async def test_short_content_is_never_published(cache_dir: Path, announced_late: bool) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    data = payload(1000)
    fill = cache.begin_fill("key", None if announced_late else 1000)
    if announced_late:
        # The Content-Length arrives after the fill started.
        fill.expected_length = 1000
    await fill.write(data[:600])
    errors: list[IncompleteContentError] = []

    async def read_tail() -> None:
        try:
            await fill.read(500, 500)
        except IncompleteContentError as error:
            errors.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_tail)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(IncompleteContentError) as caught:
            await fill.finish()

    assert (caught.value.expected, caught.value.received) == (1000, 600)
    assert errors == [caught.value]
    assert cache.get("key") is None
    assert cache.known_size("key") is None
    assert entry_files(cache_dir) == []
    assert partial_files(cache_dir) == []


async def test_long_content_is_never_published(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    fill = cache.begin_fill("key", 10)
    await fill.write(b"x" * 11)
    with pytest.raises(IncompleteContentError):
        await fill.finish()
    assert cache.get("key") is None
    assert entry_files(cache_dir) == []


async def test_wait_length_returns_once_the_length_is_known(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    announced = cache.begin_fill("announced")
    unannounced = cache.begin_fill("unannounced")
    lengths: dict[str, int] = {}

    async def wait(name: str, fill: Fill) -> None:
        lengths[name] = await fill.wait_length()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "announced", announced)
        nursery.start_soon(wait, "unannounced", unannounced)
        await trio.testing.wait_all_tasks_blocked()
        assert lengths == {}

        announced.expected_length = 7
        await trio.testing.wait_all_tasks_blocked()
        assert lengths == {"announced": 7}

        await unannounced.write(b"12345")
        await trio.testing.wait_all_tasks_blocked()
        assert "unannounced" not in lengths
        await unannounced.finish()

    assert lengths == {"announced": 7, "unannounced": 5}


async def test_one_fill_per_key(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    fill = cache.begin_fill("key")
    with pytest.raises(ValueError):
        cache.begin_fill("key")
    assert cache.running_fill("key") is fill
    assert cache.running_fill("other") is None
    await fill.finish()
    assert cache.running_fill("key") is None


async def test_new_content_replaces_old_while_old_readers_keep_theirs(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    old, same_size, shorter = payload(3000, 1), payload(3000, 2), payload(1000, 3)
    await store(cache, "key", old)
    entry = cache.get("key")
    assert entry is not None
    reader = entry.open()

    await store(cache, "key", same_size)
    assert read_all(cache, "key") == same_size
    await store(cache, "key", shorter)
    assert read_all(cache, "key") == shorter

    assert reader.read(0, 4000) == old
    reader.close()
    with pytest.raises(FileNotFoundError):
        entry.open()
    assert len(entry_files(cache_dir)) == 1
    assert cache.used_bytes == 1000


async def test_restart_after_a_crash_keeps_only_complete_entries(cache_dir: Path) -> None:
    """A killed process leaves a half-written download; the next start drops it."""
    crashing = f"""
import os, signal, sys
from pathlib import Path
import trio
from exchange_fuse.cache import ContentCache

async def main():
    cache = ContentCache(Path({str(cache_dir)!r}), 10**6)
    fill = cache.begin_fill("complete", 1000)
    await fill.write(b"c" * 1000)
    await fill.finish()
    fill = cache.begin_fill("interrupted", 5000)
    await fill.write(b"i" * 2000)
    os.kill(os.getpid(), signal.SIGKILL)

trio.run(main)
"""
    result = await trio.run_process([sys.executable, "-c", crashing], check=False)
    assert result.returncode == -signal.SIGKILL
    assert len(partial_files(cache_dir)) == 1

    # A machine crash without fsync can leave a published file shorter than its name says.
    cache = ContentCache(cache_dir, 10**6)
    await store(cache, "truncated", payload(3000))
    cache.close()
    (truncated,) = [path for path in entry_files(cache_dir) if path.stat().st_size == 3000]
    os.truncate(truncated, 1024)

    cache = ContentCache(cache_dir, 10**6)
    assert partial_files(cache_dir) == []
    assert read_all(cache, "complete") == b"c" * 1000
    assert cache.get("interrupted") is None
    assert cache.running_fill("interrupted") is None
    assert cache.get("truncated") is None
    assert not truncated.exists()
    assert cache.entry_count == 1
    assert cache.used_bytes == 1000

    retry = cache.begin_fill("interrupted", 3)
    await retry.write(b"abc")
    await retry.finish()
    assert read_all(cache, "interrupted") == b"abc"


async def test_least_recently_used_entries_go_first(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 300)
    for key in "abc":
        await store(cache, key, payload(100, ord(key)))
    assert cache.get("a") is not None

    await store(cache, "d", payload(100))
    assert [key for key in "abcd" if cache.known_size(key)] == ["a", "c", "d"]

    # Without an announced length, room is made as the bytes arrive.
    fill = cache.begin_fill("e")
    assert cache.known_size("c") == 100
    await fill.write(payload(50))
    assert cache.known_size("c") is None
    await fill.write(payload(50))
    assert cache.known_size("a") == 100
    await fill.finish()

    assert [key for key in "abcde" if cache.known_size(key)] == ["a", "d", "e"]
    assert cache.used_bytes == 300
    assert len(entry_files(cache_dir)) == 3
    assert read_all(cache, "d") == payload(100)


async def test_use_order_survives_a_restart(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 300)
    for key in "abc":
        await store(cache, key, payload(100))
        # Longer than the coarsest file time granularity.
        time.sleep(0.03)
    assert cache.get("a") is not None
    cache.close()

    cache = ContentCache(cache_dir, 200)
    assert [key for key in "abc" if cache.known_size(key)] == ["a", "c"]
    assert cache.used_bytes == 200
    assert len(entry_files(cache_dir)) == 2


async def test_open_reader_protects_its_entry_from_eviction(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 200)
    data = payload(100)
    await store(cache, "a", data)
    await store(cache, "b", payload(100))
    entry = cache.get("a")
    assert entry is not None
    reader = entry.open()
    await store(cache, "b", payload(100))  # now a is the least recently used

    await store(cache, "c", payload(100))
    assert cache.known_size("a") == 100
    assert cache.known_size("b") is None
    assert reader.read(0, 200) == data

    reader.close()
    await store(cache, "d", payload(100))
    assert cache.known_size("a") is None
    assert [key for key in "abcd" if cache.known_size(key)] == ["c", "d"]


async def test_entry_larger_than_the_cache_is_served_then_evicted(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 1000)
    await store(cache, "small", payload(500))
    big = payload(2500)
    fill = cache.begin_fill("big", len(big))
    assert cache.known_size("small") is None

    await fill.write(big)
    await fill.finish()
    assert await fill.read(0, 3000) == big
    assert read_all(cache, "big") == big
    assert cache.used_bytes == 2500

    del fill
    await store(cache, "next", payload(10))
    assert cache.known_size("big") is None
    assert cache.used_bytes == 10
    assert len(entry_files(cache_dir)) == 1


async def test_reader_keeps_reading_after_remove(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    data = payload(10_000)
    entry = await store(cache, "key", data)
    reader = entry.open()

    cache.remove("key")

    assert cache.get("key") is None
    assert cache.known_size("key") is None
    assert cache.used_bytes == 0
    assert entry_files(cache_dir) == []
    assert reader.read(0, 4096) == data[:4096]
    assert reader.read(4096, 10_000) == data[4096:]
    with pytest.raises(FileNotFoundError):
        entry.open()
    reader.close()
    with pytest.raises(OSError):
        reader.read(0, 10)
    cache.remove("key")


async def test_remove_during_download_serves_readers_but_keeps_nothing(
    cache_dir: Path,
) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    data = payload(4000)
    fill = cache.begin_fill("key", len(data))
    await fill.write(data[:1000])

    cache.remove("key")
    assert cache.running_fill("key") is None

    await fill.write(data[1000:])
    await fill.finish()
    assert await fill.read(0, 4000) == data
    assert cache.get("key") is None
    assert entry_files(cache_dir) == []
    assert partial_files(cache_dir) == []
    assert cache.used_bytes == 0


async def test_entry_deleted_behind_the_caches_back_is_downloaded_again(
    cache_dir: Path,
) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    await store(cache, "key", payload(100))
    (path,) = entry_files(cache_dir)
    path.unlink()

    assert cache.get("key") is None
    assert cache.known_size("key") is None
    assert cache.used_bytes == 0
    await store(cache, "key", payload(100, 1))
    assert read_all(cache, "key") == payload(100, 1)


async def test_keys_with_odd_characters(cache_dir: Path) -> None:
    keys = [
        "ops@example.com\0AAMkAGI2/+THg=\0AAMkAGI2+/a==",
        "../../etc/passwd",
        "line\nbreak\ttab",
        "\u202eexe.pdf😀",
        "lone \ud800 surrogate",
        "x" * 10_000,
        "",
    ]
    cache = ContentCache(cache_dir, 10 * MiB)
    for number, key in enumerate(keys):
        await store(cache, key, payload(100 + number, number))
    cache.close()

    cache = ContentCache(cache_dir, 10 * MiB)
    for number, key in enumerate(keys):
        assert read_all(cache, key) == payload(100 + number, number)
    names = [path.name for path in entry_files(cache_dir)]
    assert len(names) == len(keys)
    assert all(ENTRY_FILE.fullmatch(name) for name in names)
    assert {path.name for path in cache_dir.iterdir()} == {
        "CACHEDIR.TAG",
        "entries",
        "lock",
        "partial",
    }


async def test_only_the_owner_can_read_the_cache(cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o755)
    os.chmod(cache_dir, 0o755)
    cache = ContentCache(cache_dir, 10 * MiB)
    await store(cache, "key", b"secret attachment")

    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    for path in entry_files(cache_dir):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    tag = (cache_dir / "CACHEDIR.TAG").read_text()
    assert tag.startswith("Signature: 8a477f597d28d172789f06886806bc55")


async def test_two_caches_cannot_share_a_directory(cache_dir: Path) -> None:
    first = ContentCache(cache_dir, 10 * MiB)
    with pytest.raises(CacheInUseError):
        ContentCache(cache_dir, 10 * MiB)
    first.close()
    ContentCache(cache_dir, 10 * MiB).close()


async def test_close_fails_running_fills(cache_dir: Path) -> None:
    cache = ContentCache(cache_dir, 10 * MiB)
    fill = cache.begin_fill("key")
    await fill.write(b"part")
    cache.close()
    with pytest.raises(IncompleteContentError):
        await fill.read(0, 100)
    assert partial_files(cache_dir) == []

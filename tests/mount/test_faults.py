"""A mount under faults: throttling, 5xx, cut connections, token loss, outages, crashes.

Each test turns the emulator's fault knobs (or stops it outright) while real tools work on a
real mount, then checks what a user would see: every file byte-identical to what Graph
serves, or an ``Input/output error`` that the log explains; listings and cached files still
served while Graph is away; answers in bounded time; a daemon that stays up.

The emulator runs with a concurrency limit far above Outlook's 4, so it admits whatever the
mount sends and its ``peak_in_flight`` measures the mount's own limiter.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.mount.conftest import MountFactory
from tests.mount.faults import Storm, folder_id, graph_truth, sha256_of, timed, wait_until
from tests.support.emulator import Emulator, running_emulator
from tests.support.mount import (
    MountProcess,
    emulator_arguments,
    fuse_mounted,
    start_mount,
    tear_down,
)

MAILBOX = "ledger@example.com"
STATEMENTS = 300
READ_BEFORE_CRASH = [f"Statement {n:03}-part-{n:03}.bin" for n in range(5)]
SIZES_KIB = (2, 5, 11, 23, 47, 96)

# Graph retries cut short so that a spent budget shows within seconds.
FAST_RETRIES = (
    "--request-timeout", "3",
    "--retry-attempts", "8",
    "--retry-time", "20",
    "--retry-backoff", "0.05",
)  # fmt: skip
# For outages: a FUSE call gives up after 3 s, Graph requests after 1 s and 2 s of retries.
SHORT_TIMEOUTS = (
    "--timeout", "3",
    "--request-timeout", "1",
    "--retry-attempts", "3",
    "--retry-time", "2",
    "--retry-backoff", "0.05",
)  # fmt: skip

# 10% 503 without Retry-After, 5% 429 with Retry-After: 1, 2% of downloads cut mid-body.
STEADY_FAULTS = {
    "error_rates": {"503": 0.10},
    "throttle_rate": 0.05,
    "throttle_retry_after_s": 1,
    "cut_rate": 0.02,
    "seed": 20240301,
}


def statement(number: int) -> dict[str, object]:
    return {
        "subject": f"Statement {number:03}",
        "received": f"2024-03-{1 + number // 60:02}T{number % 60 // 4:02}:{number % 60:02}:00Z",
        "attachments": [
            {
                "name": f"part-{number:03}.bin",
                "size": f"{SIZES_KIB[number % len(SIZES_KIB)]}k",
                "seed": number,
            }
        ],
    }


MAILBOX_DESCRIPTION = {
    "folders": [
        {"name": "Statements", "messages": [statement(n) for n in range(STATEMENTS)]},
        {
            "name": "Large",
            "messages": [
                {
                    "subject": subject,
                    "received": f"2024-05-0{day}T10:00:00Z",
                    "attachments": [{"name": name, "size": "3m", "seed": 900 + day}],
                }
                for day, subject, name in ((1, "Scan", "scan.tif"), (2, "Photo", "photo.tif"))
            ],
        },
        {"name": "Incoming"},
        {
            "name": "Journal",
            "messages": [
                {
                    "subject": f"Entry {number}",
                    "received": f"2024-07-0{number}T08:00:00Z",
                    "attachments": [{"name": "entry.csv", "content": f"entry,{number}\n"}],
                }
                for number in (1, 2, 3)
            ],
        },
    ]
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state = tmp_path_factory.mktemp("emulator")
    description = state / "ledger.json"
    description.write_text(json.dumps(MAILBOX_DESCRIPTION))
    with running_emulator(
        state, f"--mailbox={MAILBOX}={description}", "--max-concurrency", "64"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def truth(emulator: Emulator) -> dict[str, dict[str, str]]:
    """Folder -> file name -> SHA-256, read through Graph before any fault is injected."""
    return {folder: graph_truth(emulator, MAILBOX, folder) for folder in ("Statements", "Large")}


@pytest.fixture(autouse=True)
def calm_emulator(emulator: Emulator) -> Iterator[None]:
    """Every test starts and ends with a running emulator and no faults."""
    yield
    os.kill(emulator.process.pid, signal.SIGCONT)
    emulator.reset_faults()


def assert_daemon_healthy(mounted: MountProcess) -> None:
    """The daemon still serves, and no failure ever reached a handler unhandled."""
    assert mounted.process.poll() is None, mounted.log()[-3000:]
    os.statvfs(mounted.mountpoint)
    log = mounted.log()
    assert "Traceback" not in log, log[-3000:]
    assert "unexpected error" not in log, log[-3000:]


def eio_reports(stderr: str) -> set[str]:
    """Names of the files a tool reported as unreadable with EIO; fails on any other error.

    Understands ``cp: cannot open 'DIR/NAME' for reading: Input/output error`` and
    ``sha256sum: NAME: Input/output error`` (quoted when the name has spaces).
    """
    failed = set()
    for line in stderr.splitlines():
        assert line.endswith(": Input/output error"), line
        quoted = line.split("'")[1::2]
        path = quoted[0] if quoted else line.split(": ")[-2]
        failed.add(path.rsplit("/", 1)[-1])
    return failed


def assert_exact_or_reported(
    expected: dict[str, str], got: dict[str, str], failed: set[str], log: str
) -> None:
    """Every file is byte-identical, or was reported as EIO and the log says why."""
    for name, digest in expected.items():
        if name in failed:
            continue
        assert got.get(name) == digest, name
    explanations = log.count("giving up") + log.count("answering EIO")
    assert explanations >= len(failed), log[-3000:]
    # The retry budget rides through these fault rates; a few EIO at most.
    assert len(failed) <= len(expected) // 100, sorted(failed)


def test_cp_r_through_throttling_5xx_cuts_and_latency_spikes_is_byte_exact(
    emulator: Emulator, truth: dict[str, dict[str, str]], mount: MountFactory, tmp_path: Path
) -> None:
    mounted = mount(emulator, MAILBOX, *FAST_RETRIES)
    copy = tmp_path / "copy"

    emulator.reset_stats()
    with Storm(emulator, STEADY_FAULTS) as storm:
        result = timed("cp", "-r", str(mounted.mountpoint / "Statements"), str(copy), timeout=240)
    stats = emulator.stats()

    failed = eio_reports(result.stderr)
    copied = {path.name: sha256_of(path) for path in copy.iterdir()}
    print(
        f"\ncp -r of {STATEMENTS} files: {result.seconds:.1f} s, exit {result.returncode}, "
        f"{len(failed)} EIO; emulator: {stats['requests_by_status']}, "
        f"{stats['cut_responses']} cut, peak in flight {stats['peak_in_flight']}; "
        f"{storm.spikes} latency spikes, {storm.bursts} 429 bursts"
    )
    assert_exact_or_reported(truth["Statements"], copied, failed, mounted.log())
    assert stats["peak_in_flight"] <= 4
    # The faults did happen.
    assert stats["requests_by_status"].get("503", 0) >= 10
    assert stats["requests_by_status"].get("429", 0) >= 10
    assert stats["cut_responses"] >= 1
    assert storm.spikes >= 2 and storm.bursts >= 2
    assert_daemon_healthy(mounted)


def test_sixteen_concurrent_readers_keep_at_most_four_requests_in_flight(
    emulator: Emulator, truth: dict[str, dict[str, str]], mount: MountFactory
) -> None:
    mounted = mount(emulator, MAILBOX, *FAST_RETRIES)
    folder = mounted.mountpoint / "Statements"
    names = sorted(os.listdir(folder))
    assert set(names) == set(truth["Statements"])

    emulator.reset_stats()
    with Storm(emulator, STEADY_FAULTS):
        started = time.monotonic()
        result = subprocess.run(
            ["xargs", "-0", "-P", "16", "-n", "5", "sha256sum", "--"],
            input="\0".join(names),
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=240,
        )
        seconds = time.monotonic() - started
    stats = emulator.stats()

    failed = eio_reports(result.stderr)
    read = {line[66:]: line[:64] for line in result.stdout.splitlines()}
    print(
        f"\n16 readers over {len(names)} files: {seconds:.1f} s, {len(failed)} EIO; emulator: "
        f"{stats['requests_by_status']}, peak in flight {stats['peak_in_flight']}"
    )
    assert_exact_or_reported(truth["Statements"], read, failed, mounted.log())
    assert 2 <= stats["peak_in_flight"] <= 4
    assert_daemon_healthy(mounted)


def test_tokens_that_expire_or_are_revoked_mid_copy_cost_no_file(
    emulator: Emulator, truth: dict[str, dict[str, str]], mount: MountFactory, tmp_path: Path
) -> None:
    # Tokens live 2 s, so a copy of a few seconds outlives several of them.
    emulator.set_faults(token_lifetime_s=2)
    mounted = mount(emulator, MAILBOX, *FAST_RETRIES)
    emulator.set_faults(latency_ms=15)
    emulator.reset_stats()

    copy = tmp_path / "copy"
    started = time.monotonic()
    copying = subprocess.Popen(
        ["cp", "-r", str(mounted.mountpoint / "Statements"), str(copy)],
        stderr=subprocess.PIPE,
        text=True,
    )
    revocations = 0
    while revocations < 3:
        time.sleep(0.7)
        if copying.poll() is not None:
            break
        emulator.revoke_tokens()
        revocations += 1
    _, stderr = copying.communicate(timeout=120)
    seconds = time.monotonic() - started
    stats = emulator.stats()

    print(
        f"\ncp -r in {seconds:.1f} s with {revocations} revocations and 2 s tokens: "
        f"{stats['token_requests']} "
        f"tokens fetched for {stats['requests_total']} requests, "
        f"{stats['requests_by_status'].get('401', 0)} answered 401"
    )
    assert copying.returncode == 0, stderr
    copied = {path.name: sha256_of(path) for path in copy.iterdir()}
    assert copied == truth["Statements"]
    assert revocations >= 1
    log = mounted.log()
    # Each revocation can catch every request in flight (at most four) with the old token;
    # each such request fetches no token of its own.
    assert 1 <= log.count("access token rejected by graph") <= 4 * revocations + 2
    assert stats["requests_by_status"].get("401", 0) <= 4 * revocations + 2
    # A new token after each revocation (and as tokens expire), never one per request.
    assert revocations <= stats["token_requests"] <= stats["requests_total"] // 10
    assert_daemon_healthy(mounted)


def mime(subject: str, name: str, content: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = "bank@example.com"
    message["To"] = MAILBOX
    message["Subject"] = subject
    message.set_content("Statement attached.")
    message.add_attachment(content, maintype="application", subtype="pdf", filename=name)
    return bytes(message)


def test_network_outage_serves_cache_and_listings_then_resumes_without_remount(
    emulator: Emulator, truth: dict[str, dict[str, str]], mount: MountFactory
) -> None:
    mounted = mount(emulator, MAILBOX, "--poll-interval", "1", *SHORT_TIMEOUTS)
    statements = mounted.mountpoint / "Statements"
    incoming = mounted.mountpoint / "Incoming"
    assert len(os.listdir(statements)) == STATEMENTS
    assert os.listdir(incoming) == []
    cached = sorted(truth["Statements"])[:3]
    for name in cached:
        assert sha256_of(statements / name) == truth["Statements"][name]
    uncached, unstated = sorted(truth["Statements"])[100:102]

    os.kill(emulator.process.pid, signal.SIGSTOP)
    try:
        listing = timed("ls", str(statements))
        cached_read = timed("sha256sum", str(statements / cached[0]))
        uncached_read = timed("cat", str(statements / uncached))
        # stat needs the exact size, which only a download tells.
        uncached_stat = timed("stat", str(statements / unstated))
        never_listed = timed("ls", str(mounted.mountpoint / "Inbox"))
        wait_until(lambda: "serving the last listing" in mounted.log(), timeout=15)
    finally:
        os.kill(emulator.process.pid, signal.SIGCONT)
    print(
        f"\nduring the outage: ls {listing.seconds:.2f} s, cached read "
        f"{cached_read.seconds:.2f} s, uncached read EIO after {uncached_read.seconds:.2f} s, "
        f"its stat EIO after {uncached_stat.seconds:.2f} s, "
        f"unlisted folder EIO after {never_listed.seconds:.2f} s"
    )

    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == STATEMENTS
    assert listing.seconds < 2
    assert cached_read.stdout.split()[0] == truth["Statements"][cached[0]]
    assert cached_read.seconds < 2
    assert uncached_read.returncode == 1
    assert "Input/output error" in uncached_read.stderr
    assert uncached_read.seconds < 3 + 3
    assert uncached_stat.returncode == 1
    assert "Input/output error" in uncached_stat.stderr
    assert uncached_stat.seconds < 3 + 3
    assert never_listed.returncode != 0
    assert "Input/output error" in never_listed.stderr
    assert never_listed.seconds < 3 + 3

    # The network is back: new mail shows within a poll, and failed reads now work.
    emulator.add_message(
        MAILBOX, folder_id(emulator, MAILBOX, "Incoming"), mime("Late", "late.pdf", b"%PDF late")
    )
    wait_until(lambda: os.listdir(incoming) == ["Late-late.pdf"], timeout=20)
    assert (incoming / "Late-late.pdf").read_bytes() == b"%PDF late"
    assert sha256_of(statements / uncached) == truth["Statements"][uncached]
    assert os.stat(statements / unstated).st_size == len((statements / unstated).read_bytes())
    assert len(os.listdir(mounted.mountpoint / "Inbox")) == 0
    wait_until(lambda: "the listing is current" in mounted.log(), timeout=15)
    assert_daemon_healthy(mounted)


def test_a_spent_mailbox_budget_fails_reads_at_once_and_sends_nothing_until_it_renews(
    emulator: Emulator, truth: dict[str, dict[str, str]], mount: MountFactory
) -> None:
    # Retries give up within half a second, so any Retry-After outlasts them.
    mounted = mount(emulator, MAILBOX, *SHORT_TIMEOUTS, "--retry-time", "0.5")
    statements = mounted.mountpoint / "Statements"
    refused_name, held_back_name = sorted(truth["Statements"])[200:202]
    assert len(os.listdir(statements)) == STATEMENTS

    # One request per 6 s window, and the listing just used it: the next request gets 429
    # with a Retry-After of several seconds.
    emulator.set_faults(mailbox_budget=1, budget_window_s=6)
    refused = timed("cat", str(statements / refused_name))
    sent = emulator.stats()["requests_total"]
    held_back = timed("cat", str(statements / held_back_name))
    print(
        f"\nmailbox budget spent: EIO after {refused.seconds:.2f} s, then after "
        f"{held_back.seconds:.2f} s without a request"
    )

    for result in (refused, held_back):
        assert result.returncode == 1
        assert "Input/output error" in result.stderr
        assert result.seconds < 2
    assert emulator.stats()["requests_total"] == sent
    assert "graph asks for no requests to ledger@example.com" in mounted.log()

    # Once Graph's pause is over, reads reach Graph again and work.
    emulator.reset_faults()
    wait_until(lambda: reads(statements / held_back_name), timeout=15, step=0.5)
    assert "sending requests again" in mounted.log()
    assert sha256_of(statements / refused_name) == truth["Statements"][refused_name]
    assert sha256_of(statements / held_back_name) == truth["Statements"][held_back_name]
    assert_daemon_healthy(mounted)


def reads(path: Path) -> bool:
    return subprocess.run(["cat", str(path)], capture_output=True).returncode == 0


def test_ctrl_c_during_a_stalled_read_ends_cp_at_once(
    emulator: Emulator, mount: MountFactory, tmp_path: Path
) -> None:
    mounted = mount(emulator, MAILBOX, *SHORT_TIMEOUTS)
    large = mounted.mountpoint / "Large"
    assert sorted(os.listdir(large)) == ["Photo-photo.tif", "Scan-scan.tif"]

    # Content trickles in (3 MiB at 16 KiB/s): cp is inside read() when Ctrl-C comes.
    emulator.set_faults(bandwidth_bytes_per_s=16 * 1024)
    target = tmp_path / "scan.tif"
    copying = subprocess.Popen(["cp", str(large / "Scan-scan.tif"), str(target)])
    wait_until(target.exists, timeout=10, step=0.02)
    time.sleep(0.5)
    interrupted = time.monotonic()
    copying.send_signal(signal.SIGINT)
    copying.wait(timeout=10)
    stalled_read_s = time.monotonic() - interrupted

    # Graph does not answer at all: cp waits in stat or open, which end at --timeout.
    emulator.reset_faults()
    os.kill(emulator.process.pid, signal.SIGSTOP)
    try:
        copying = subprocess.Popen(["cp", str(large / "Photo-photo.tif"), str(tmp_path)])
        time.sleep(0.5)
        interrupted = time.monotonic()
        copying.send_signal(signal.SIGINT)
        copying.wait(timeout=15)
        no_answer_s = time.monotonic() - interrupted
    finally:
        os.kill(emulator.process.pid, signal.SIGCONT)
    print(
        f"\nCtrl-C: cp ended {stalled_read_s:.2f} s after it during a stalled read, "
        f"{no_answer_s:.2f} s after it while Graph did not answer (--timeout 3)"
    )

    assert copying.returncode == -signal.SIGINT
    assert stalled_read_s < 2.0
    assert no_answer_s < 3 + 1.5
    assert len(os.listdir(mounted.mountpoint / "Statements")) == STATEMENTS
    assert_daemon_healthy(mounted)


def test_kill_9_mid_download_then_restart_on_the_same_mountpoint(
    emulator: Emulator, truth: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    cache = tmp_path / "cache"
    arguments = [
        *emulator_arguments(emulator, MAILBOX, tmp_path / "secret"),
        "--cache-dir", str(cache),
        *FAST_RETRIES,
    ]  # fmt: skip
    try:
        crash_mid_download(emulator, truth, mountpoint, arguments, tmp_path / "first.log")
        restart_and_check(emulator, truth, mountpoint, arguments, tmp_path / "second.log")
    finally:
        if fuse_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def crash_mid_download(
    emulator: Emulator,
    truth: dict[str, dict[str, str]],
    mountpoint: Path,
    arguments: list[str],
    log_path: Path,
) -> None:
    """Read a few files, start a slow download, kill -9 the daemon in the middle of it."""
    cache = Path(arguments[arguments.index("--cache-dir") + 1])
    crashed = start_mount(mountpoint, arguments, log_path)
    try:
        for name in READ_BEFORE_CRASH:
            assert sha256_of(mountpoint / "Statements" / name) == truth["Statements"][name]
        emulator.set_faults(bandwidth_bytes_per_s=64 * 1024)
        reader = subprocess.Popen(
            ["cat", str(mountpoint / "Large" / "Scan-scan.tif")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: any(p.stat().st_size > 0 for p in cache.glob("*/partial/*")))
        crashed.process.send_signal(signal.SIGKILL)
        crashed.process.wait(timeout=10)
        assert reader.wait(timeout=10) != 0
    finally:
        if crashed.process.poll() is None:
            crashed.process.kill()
            crashed.process.wait(timeout=10)
        emulator.reset_faults()

    with pytest.raises(OSError) as dead:
        os.statvfs(mountpoint)
    assert dead.value.errno == errno.ENOTCONN
    # The slow download was cut short (files read ahead may have been too).
    partial = [path.stat().st_size for path in cache.glob("*/partial/*")]
    assert partial and all(size < 3 * 1024 * 1024 for size in partial) and max(partial) > 0
    # A crash of the machine can also leave a published entry short.
    entries = sorted(cache.glob("*/entries/*/*"))
    assert len(entries) >= len(READ_BEFORE_CRASH)
    with open(entries[0], "r+b") as damaged:
        damaged.truncate(entries[0].stat().st_size // 2)


def restart_and_check(
    emulator: Emulator,
    truth: dict[str, dict[str, str]],
    mountpoint: Path,
    arguments: list[str],
    log_path: Path,
) -> None:
    """Start again on the dead mount: it is cleared, and no partial content is ever served."""
    cache = Path(arguments[arguments.index("--cache-dir") + 1])
    again = start_mount(mountpoint, arguments, log_path)
    try:
        log = again.log()
        assert "clearing the dead mount" in log
        assert re.search(r"deleted [1-9]\d* unfinished downloads", log), log
        assert "deleted 1 damaged entries" in log
        for name in READ_BEFORE_CRASH:
            assert sha256_of(mountpoint / "Statements" / name) == truth["Statements"][name]
        for name, digest in truth["Large"].items():
            assert sha256_of(mountpoint / "Large" / name) == digest
        # Downloads still running (a reader's last bytes, files read ahead) finish.
        wait_until(lambda: list(cache.glob("*/partial/*")) == [], timeout=30)
        for entry in cache.glob("*/entries/*/*"):
            assert entry.stat().st_size == int(entry.suffix[1:]), entry
        assert_daemon_healthy(again)
    finally:
        tear_down(again)


def test_expired_delta_and_moved_mail_keep_names_inodes_and_content(
    emulator: Emulator, mount: MountFactory
) -> None:
    mounted = mount(emulator, MAILBOX, "--poll-interval", "1", *FAST_RETRIES)
    emulator.reset_stats()
    journal = mounted.mountpoint / "Journal"
    archive = mounted.mountpoint / "Archive"
    names = ["Entry 1-entry.csv", "Entry 2-entry.csv", "Entry 3-entry.csv"]
    assert sorted(os.listdir(journal)) == names
    assert os.listdir(archive) == []
    inodes = {name: os.stat(journal / name).st_ino for name in names}
    # Both folders polled once: the poller holds a delta token for each.
    wait_until(lambda: message_delta_requests(emulator) >= 2, timeout=10)

    # Graph forgets every delta token: the next poll starts over and changes nothing.
    emulator.expire_delta_tokens()
    wait_until(lambda: "delta of /Journal expired" in mounted.log(), timeout=10)
    assert sorted(os.listdir(journal)) == names
    assert {name: os.stat(journal / name).st_ino for name in names} == inodes

    # A rule moves a message to Archive: its immutable id still reads from where the
    # kernel saw it, and the next poll shows it in Archive with the same content.
    (entry_2,) = [
        m
        for m in emulator.list_messages(MAILBOX, folder_id(emulator, MAILBOX, "Journal"))
        if m["subject"] == "Entry 2"
    ]
    emulator.move_message(MAILBOX, entry_2["id"], "archive")
    assert (journal / "Entry 2-entry.csv").read_text() == "entry,2\n"
    # One poll round refreshes the two folders one after the other: wait for both.
    wait_until(
        lambda: (
            os.listdir(archive) == ["Entry 2-entry.csv"]
            and sorted(os.listdir(journal)) == ["Entry 1-entry.csv", "Entry 3-entry.csv"]
        ),
        timeout=10,
    )
    assert (archive / "Entry 2-entry.csv").read_text() == "entry,2\n"
    assert os.stat(journal / "Entry 1-entry.csv").st_ino == inodes["Entry 1-entry.csv"]
    assert_daemon_healthy(mounted)


def message_delta_requests(emulator: Emulator) -> int:
    requests: dict[str, dict[str, int]] = emulator.stats()["requests"]
    return sum(
        sum(statuses.values())
        for route, statuses in requests.items()
        if route.endswith("/messages/delta")
    )

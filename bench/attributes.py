"""``ls -l`` and ``stat`` of every file in a warm 20,000-entry folder, against tmpfs.

Warm means the mount has listed the folder and knows every file's exact size (each
attachment was read once, with the emulator's latency switched off to save time). Three
measures, each against the same operation on a tmpfs folder with the same names and sizes:

- ``ls -l`` of the folder;
- ``os.stat`` of every file while the kernel still holds the attributes (right after
  ``ls -l``, which hands them over with the directory entries);
- ``os.stat`` of every file once the kernel's entry and attribute timeouts (the poll
  interval) have run out, so that every ``stat`` is a lookup answered by the mount.

A small extra folder shows the first ``ls -l`` of a folder whose sizes are not known yet,
against the plain listing of the same folder (for comparison only).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.emulator import Emulator

from . import bounds, rig
from .profile import profiled
from .results import Row, Target

log = logging.getLogger(__name__)

MAILBOX = "attributes@example.com"
TARGETS = 3
_TMPFS = Path("/dev/shm")
_FOLDER_DELTA_ROUTE = "GET /users/{mailbox}/mailFolders/delta"


def run(options: rig.Options) -> list[Row]:
    entries = 2_000 if options.quick else 20_000
    fresh = 200 if options.quick else 400
    # The poll interval is also the kernel's entry and attribute timeout.
    timeout = 10 if options.quick else 30
    repeats = 3
    specs = [
        f"address={MAILBOX},folders=1,messages={entries},attachments=1,size=1k-4k,seed=41",
        f"address={MAILBOX},folders=1,messages={fresh},attachments=1,size=1k-256k,seed=42,"
        "name=Fresh",
    ]
    details: list[str] = []
    rows: list[Row] = []
    tmpfs = _TMPFS / f"exchange-bench-{os.getpid()}"
    try:
        with rig.emulator(options, "attributes", specs) as emulator:
            ids = rig.folder_ids(emulator, MAILBOX)
            rig.materialise(emulator, MAILBOX, ids["Inbox/Folder 01"])
            rig.materialise(emulator, MAILBOX, ids["Inbox/Fresh 01"])
            rig.start_change_sequence(emulator, MAILBOX)
            with rig.mounted(emulator, MAILBOX, options.work / "attributes-first") as mount:
                rows.append(_first_ls_l(emulator, mount, ids["Inbox/Fresh 01"]))
            with rig.mounted(
                emulator, MAILBOX, options.work / "attributes", "--poll-interval", str(timeout)
            ) as mount:
                folder = mount.mountpoint / "Inbox" / "Folder 01"
                names = sorted(os.listdir(folder))
                paths = [str(folder / name) for name in names]
                warm_up = _warm_up(options, emulator, paths)
                sizes = [os.stat(path).st_size for path in paths]
                bounds.make_tmpfs_files(tmpfs, names, sizes)
                local = [str(tmpfs / name) for name in names]
                _settle_poller(emulator)
                details.append(
                    f"warm-up: {len(paths):,} sizes learnt in {warm_up:.0f} s "
                    "(one download each, emulator latency off)"
                )

                ls_mount, ls_tmpfs = [], []
                stat_mount, stat_tmpfs = [], []
                cold_mount, cold_tmpfs = [], []
                for repeat in range(repeats):
                    ls_tmpfs.append(rig.timed(["ls", "-l", tmpfs]))
                    ls_mount.append(rig.timed(["ls", "-l", folder]))
                    stat_mount.append(bounds.stat_all(paths))
                    stat_tmpfs.append(bounds.stat_all(local))
                    time.sleep(timeout + 1)
                    emulator.reset_stats()
                    profile = options.work / "profiles" / "stat-expired.txt"
                    with profiled(options.profile and repeat == 0, mount.pid, profile, details):
                        cold_mount.append(bounds.stat_all(paths))
                    cold_tmpfs.append(bounds.stat_all(local))
                    requests = rig.graph_requests(emulator.stats())
                    if requests > 2:
                        details.append(f"stat after expiry sent {requests} Graph requests")
    finally:
        shutil.rmtree(tmpfs, ignore_errors=True)

    def row(what: str, mount_times: list[float], local_times: list[float]) -> Row:
        mount_time, local_time = rig.median(mount_times), rig.median(local_times)
        return Row(
            what,
            f"{mount_time:.3f} s",
            f"{local_time:.3f} s",
            mount_time / local_time,
            Target("<=", 3),
        )

    count = f"{entries:,}"
    rows.append(row(f"warm ls -l, {count} files", ls_mount, ls_tmpfs))
    rows.append(row(f"warm stat of {count} files (kernel cache)", stat_mount, stat_tmpfs))
    rows.append(row(f"warm stat of {count} files (cache expired)", cold_mount, cold_tmpfs))
    rows[-1].details.extend(details)
    return rows


def _first_ls_l(emulator: Emulator, mount: rig.Mount, folder_id: str) -> Row:
    """``ls -l`` of a folder never looked at, against the plain listing of it."""
    listing = bounds.list_folder(emulator, MAILBOX, folder_id)
    emulator.reset_stats()
    seconds = rig.timed(["ls", "-l", mount.mountpoint / "Inbox" / "Fresh 01"])
    stats = emulator.stats()
    rig.wait_quiet(emulator)
    downloaded = emulator.stats()["bytes_sent"]
    files = len(listing.attachments)
    return Row(
        f"first ls -l, {files} files, sizes unknown",
        f"{seconds:.2f} s, {rig.graph_requests(stats)} req",
        f"{listing.seconds:.2f} s, {listing.requests} req",
        seconds / listing.seconds,
        details=[
            f"requests: {rig.requests_by_route(stats)}",
            f"{downloaded / 2**20:.1f} MiB sent by Graph to learn {files} sizes",
        ],
    )


def _warm_up(options: rig.Options, emulator: Emulator, paths: list[str]) -> float:
    """Learn every size through the mount (each stat starts that file's download)."""
    started = time.perf_counter()
    emulator.set_faults(latency_ms=0)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(os.stat, paths))
        rig.wait_quiet(emulator, quiet=1.0, timeout=1800)
    finally:
        emulator.set_faults(latency_ms=options.latency_ms)
    return time.perf_counter() - started


def _settle_poller(emulator: Emulator) -> None:
    """Wait until a poll round that started after the warm-up is over.

    Every round covers every listed folder, and a folder's first round is a full delta and
    a relisting; after this, rounds cost a request or two and no CPU to speak of.
    """
    emulator.reset_stats()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        statuses = emulator.stats()["requests"].get(_FOLDER_DELTA_ROUTE, {})
        if sum(statuses.values()):
            break
        time.sleep(0.5)
    rig.wait_quiet(emulator, quiet=3.0, timeout=600)

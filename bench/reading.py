"""``cat`` of a cached 200 MB attachment, against ``cat`` of the cache file on local disk.

Two warm cases, both against the same bound (the cache file, which sits in the page cache
after the download, as the mount's copy does):

- the same mount again: the kernel keeps the file's pages (``keep_cache``), so this is what
  a second reader sees;
- a new mount on the same cache directory: the kernel holds nothing, and every read is
  answered by the mount from its cache file.

The cold ``cat`` that fills the cache is compared with one plain download of the same
attachment (for comparison only). ``--quick`` uses 50 MB.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import bounds, rig
from .profile import profiled
from .results import Row, Target

log = logging.getLogger(__name__)

MAILBOX = "read@example.com"
TARGETS = 2
_MB = 1e6


def run(options: rig.Options) -> list[Row]:
    size = "50m" if options.quick else "200m"
    remounts = 3
    repeats = 5
    spec = f"address={MAILBOX},folders=1,messages=1,attachments=1,size={size},seed=31"
    work = options.work / "reading"
    cache_dir = work / "cache"
    details: list[str] = []
    with rig.emulator(options, "reading", [spec]) as emulator:
        folder_id = rig.folder_ids(emulator, MAILBOX)["Inbox/Folder 01"]
        listing = bounds.list_folder(emulator, MAILBOX, folder_id)
        plain = bounds.download_all(emulator, MAILBOX, listing.attachments, work / "plain", 1)
        for path in (work / "plain").iterdir():
            path.unlink()

        with rig.mounted(emulator, MAILBOX, work, cache_dir=cache_dir) as mount:
            folder = mount.mountpoint / "Inbox" / "Folder 01"
            path = folder / os.listdir(folder)[0]
            length = os.stat(path).st_size
            cold = rig.timed(["cat", path])
            same_mount = [rig.timed(["cat", path]) for _ in range(repeats)]

        cache_file = _largest_file(cache_dir)
        if cache_file.stat().st_size != length:
            details.append(f"the cache file holds {cache_file.stat().st_size} bytes")
        local = [rig.timed(["cat", cache_file]) for _ in range(repeats)]

        new_mount: list[float] = []
        for index in range(remounts):
            with rig.mounted(emulator, MAILBOX, work, cache_dir=cache_dir) as mount:
                os.listdir(folder)
                emulator.reset_stats()
                profile = options.work / "profiles" / "warm-cat.txt"
                with profiled(options.profile and index == 0, mount.pid, profile, details):
                    new_mount.append(rig.timed(["cat", path]))
                downloads = emulator.stats()["bytes_sent"]
                if downloads:
                    details.append(f"a warm cat downloaded {downloads} bytes")

    local_rate = length / rig.median(local)
    what = f"warm cat, {length / 2**20:.0f} MiB cached"

    def rate_row(label: str, times: list[float], bound_rate: float, target: bool) -> Row:
        rate = length / rig.median(times)
        return Row(
            label,
            f"{rate / _MB:.0f} MB/s",
            f"{bound_rate / _MB:.0f} MB/s",
            rate / bound_rate,
            Target(">=", 0.5) if target else None,
        )

    rows = [
        rate_row(f"{what}, new mount (daemon reads)", new_mount, local_rate, True),
        rate_row(f"{what}, same mount (page cache)", same_mount, local_rate, True),
        rate_row(
            f"cold cat, {length / 2**20:.0f} MiB", [cold], plain.bytes / plain.seconds, False
        ),
    ]
    rows[0].details.extend(details)
    rows[0].details.append(
        "seconds, new mount: "
        + ", ".join(f"{t:.3f}" for t in new_mount)
        + "; local cat: "
        + ", ".join(f"{t:.3f}" for t in local)
    )
    rows[-1].details.append(
        f"bound: one plain download of the attachment, {plain.seconds:.2f} s; cat {cold:.2f} s"
    )
    return rows


def _largest_file(directory: Path) -> Path:
    found = [path for path in directory.rglob("*") if path.is_file()]
    return max(found, key=lambda path: path.stat().st_size)

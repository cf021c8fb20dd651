"""Resident memory per listed attachment: RSS with 100,000 attachments listed minus RSS empty.

The mailbox has 5 folders of 10,000 messages with two attachments each (one folder with
``--quick``: 20,000 attachments). "Empty" is the mount right after start-up, with the folder
tree loaded and no folder listed; then every folder is listed with ``ls``.
"""

from __future__ import annotations

import logging
import time

from . import rig
from .results import Row, Target

log = logging.getLogger(__name__)

MAILBOX = "memory@example.com"
TARGETS = 1
_KB = 1024


def run(options: rig.Options) -> list[Row]:
    folders = 1 if options.quick else 5
    spec = f"address={MAILBOX},folders={folders},messages=10000,attachments=2,size=1k-256k,seed=61"
    with rig.emulator(options, "memory", [spec]) as emulator:
        ids = rig.folder_ids(emulator, MAILBOX)
        names = [f"Folder {number:02d}" for number in range(1, folders + 1)]
        for name in names:
            rig.materialise(emulator, MAILBOX, ids[f"Inbox/{name}"])
        with rig.mounted(emulator, MAILBOX, options.work / "memory") as mount:
            time.sleep(1)
            empty = mount.rss_bytes()
            files = 0
            for name in names:
                _, entries = rig.count_lines(["ls", mount.mountpoint / "Inbox" / name])
                files += entries
            time.sleep(1)
            listed = mount.rss_bytes()

    per_file = (listed - empty) / files
    return [
        Row(
            f"memory per listed attachment ({files:,})",
            f"{per_file / _KB:.2f} KB",
            "1 KB",
            per_file / _KB,
            Target("<=", 1.0),
            details=[f"RSS {empty / 2**20:.0f} MiB empty, {listed / 2**20:.0f} MiB listed"],
        )
    ]

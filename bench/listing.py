"""First ``ls`` of a large folder, against a plain script paging the same listing.

The folder holds 20,000 messages with one or two attachments each (about 30,000 files;
4,000 messages with ``--quick``). Several identical folders give several first listings on
one mount; each is timed right after the plain script lists the same folder, so both see the
same load on the machine. The emulator builds every folder before anything is timed.
"""

from __future__ import annotations

import logging

from . import bounds, rig
from .profile import profiled
from .results import Row, Target

log = logging.getLogger(__name__)

MAILBOX = "listing@example.com"
TARGETS = 2


def run(options: rig.Options) -> list[Row]:
    messages = 4_000 if options.quick else 20_000
    samples = 2 if options.quick else 3
    spec = (
        f"address={MAILBOX},folders={samples},messages={messages},attachments=1-2,"
        "size=1k-256k,seed=11"
    )
    details: list[str] = []
    mount_times: list[float] = []
    bound_times: list[float] = []
    mount_requests: list[int] = []
    bound_requests: list[int] = []
    attachments = 0
    with rig.emulator(options, "listing", [spec]) as emulator:
        ids = rig.folder_ids(emulator, MAILBOX)
        names = [f"Folder {number:02d}" for number in range(1, samples + 1)]
        for name in names:
            rig.materialise(emulator, MAILBOX, ids[f"Inbox/{name}"])

        with rig.mounted(emulator, MAILBOX, options.work / "listing") as mount:
            for index, name in enumerate(names):
                listing = bounds.list_folder(emulator, MAILBOX, ids[f"Inbox/{name}"])
                bound_times.append(listing.seconds)
                bound_requests.append(listing.requests)
                attachments = len(listing.attachments)

                emulator.reset_stats()
                folder = mount.mountpoint / "Inbox" / name
                profile = options.work / "profiles" / f"listing-{index + 1}.txt"
                with profiled(options.profile and index == 0, mount.pid, profile, details):
                    seconds, entries = rig.count_lines(["ls", folder])
                stats = emulator.stats()
                mount_times.append(seconds)
                mount_requests.append(rig.graph_requests(stats))
                if entries != attachments:
                    details.append(
                        f"{name}: the mount listed {entries} files, the folder has "
                        f"{attachments} attachments"
                    )
            details.append(f"mount RSS after the listings: {mount.rss_bytes() / 2**20:.0f} MiB")

    mount_time, bound_time = rig.median(mount_times), rig.median(bound_times)
    requests, bound = max(mount_requests), max(bound_requests)
    what = f"first ls, {messages:,} messages ({attachments:,} files)"
    details.insert(
        0,
        "seconds per folder, mount: "
        + ", ".join(f"{t:.2f}" for t in mount_times)
        + "; plain script: "
        + ", ".join(f"{t:.2f}" for t in bound_times),
    )
    return [
        Row(
            what,
            f"{mount_time:.2f} s",
            f"{bound_time:.2f} s",
            mount_time / bound_time,
            Target("<=", 1.15),
            details=details,
        ),
        Row(
            f"{what}: Graph requests",
            f"{requests}",
            f"{bound}",
            requests - bound,
            Target("<=", 2, "<= +2"),
            ratio_text=f"{requests - bound:+d}",
        ),
    ]

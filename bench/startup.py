"""Mount start-up does not depend on how much mail there is: only the folder tree is read.

Two mailboxes with the same tree of 40 generated folders (plus the default ones): one without
messages, one with 5,000 messages in every generated folder (200,000 in all; 1,000 each with
``--quick``). Each is mounted a few times, alternately; start-up is the time from starting
the process to a mount that answers, and the Graph requests it sent.
"""

from __future__ import annotations

import logging

from . import rig
from .results import Row, Target

log = logging.getLogger(__name__)

EMPTY = "empty@example.com"
FULL = "full@example.com"
TARGETS = 2
_TREE = "folders=10,subfolders=3,depth=2"


def run(options: rig.Options) -> list[Row]:
    messages = 1_000 if options.quick else 5_000
    repeats = 2 if options.quick else 3
    specs = [
        f"address={EMPTY},{_TREE},messages=0",
        f"address={FULL},{_TREE},messages={messages},attachments=1-3",
    ]
    times: dict[str, list[float]] = {EMPTY: [], FULL: []}
    requests: dict[str, list[int]] = {EMPTY: [], FULL: []}
    with rig.emulator(options, "startup", specs) as emulator:
        for repeat in range(repeats):
            for mailbox in (EMPTY, FULL):
                emulator.reset_stats()
                directory = options.work / "startup" / f"{mailbox}-{repeat}"
                with rig.mounted(emulator, mailbox, directory) as mount:
                    times[mailbox].append(mount.started_in)
                    requests[mailbox].append(rig.graph_requests(emulator.stats()))

    full, empty = rig.median(times[FULL]), rig.median(times[EMPTY])
    full_requests, empty_requests = max(requests[FULL]), max(requests[EMPTY])
    total = 40 * messages
    return [
        Row(
            f"start-up, {total:,} messages vs none",
            f"{full:.2f} s",
            f"{empty:.2f} s",
            full / empty,
            Target("<=", 1.2),
            details=[
                "seconds with mail: "
                + ", ".join(f"{t:.2f}" for t in times[FULL])
                + "; without: "
                + ", ".join(f"{t:.2f}" for t in times[EMPTY])
            ],
        ),
        Row(
            f"start-up, {total:,} messages vs none: Graph requests",
            f"{full_requests}",
            f"{empty_requests}",
            full_requests - empty_requests,
            Target("<=", 0, "<= +0"),
            ratio_text=f"{full_requests - empty_requests:+d}",
        ),
    ]

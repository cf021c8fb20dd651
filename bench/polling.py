"""Graph requests of one idle poll round over 50 watched folders.

The mount polls every few seconds here (the interval does not change what a round costs).
All 50 folders are listed first, so the poller watches them; once every folder has had its
first round (a full delta and a relisting), a few idle rounds are counted. The bound is one
request per watched folder; ``$batch`` could do with fewer.
"""

from __future__ import annotations

import logging
import time

from tests.support.emulator import Emulator

from . import rig
from .results import Row, Target

log = logging.getLogger(__name__)

MAILBOX = "poll@example.com"
TARGETS = 1
FOLDERS = 50
_FOLDER_DELTA_ROUTE = "GET /users/{mailbox}/mailFolders/delta"


def run(options: rig.Options) -> list[Row]:
    interval = 5 if options.quick else 10
    rounds = 2 if options.quick else 3
    spec = f"address={MAILBOX},folders={FOLDERS},messages=20,attachments=1,size=1k,seed=51"
    directory = options.work / "polling"
    with rig.emulator(options, "polling", [spec]) as emulator:
        rig.start_change_sequence(emulator, MAILBOX)
        with rig.mounted(emulator, MAILBOX, directory, "--poll-interval", str(interval)) as mount:
            inbox = mount.mountpoint / "Inbox"
            for number in range(1, FOLDERS + 1):
                rig.timed(["ls", inbox / f"Folder {number:02d}"])
            # Two round starts after every folder was listed: the first full rounds are over.
            emulator.reset_stats()
            _wait_rounds(emulator, 2, timeout=20 * interval + 120)
            rig.wait_quiet(emulator, quiet=2.0)

            emulator.reset_stats()
            durations = _wait_rounds(emulator, rounds, timeout=rounds * interval * 4 + 120)
            rig.wait_quiet(emulator, quiet=2.0)
            stats = emulator.stats()

    counted = _round_starts(stats)
    per_round = rig.graph_requests(stats) / counted
    return [
        Row(
            f"idle poll of {FOLDERS} watched folders",
            f"{per_round:.1f} req/round",
            f"{FOLDERS} req/round",
            per_round / FOLDERS,
            Target("<=", 1.0),
            details=[
                f"{counted} rounds: {rig.requests_by_route(stats)}",
                "a round took "
                + ", ".join(f"{seconds:.1f}" for seconds in durations)
                + f" s (requests one after another, {options.latency_ms:g} ms latency)",
            ],
        )
    ]


def _round_starts(stats: dict[str, object]) -> int:
    requests = stats["requests"]
    assert isinstance(requests, dict)
    return sum(requests.get(_FOLDER_DELTA_ROUTE, {}).values())


def _wait_rounds(emulator: Emulator, rounds: int, timeout: float) -> list[float]:
    """Wait until ``rounds`` rounds have started; the length of each round seen whole.

    A round is a burst of requests; rounds are separated by the idle interval.
    """
    deadline = time.monotonic() + timeout
    durations: list[float] = []
    last_count = rig.graph_requests(emulator.stats())
    burst_start: float | None = None
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        stats = emulator.stats()
        count = rig.graph_requests(stats)
        now = time.monotonic()
        if count != last_count:
            if burst_start is None:
                burst_start = now
            last_count, last_change = count, now
        elif burst_start is not None and now - last_change > 1.0 and not stats["in_flight"]:
            durations.append(last_change - burst_start)
            burst_start = None
        if _round_starts(stats) >= rounds and burst_start is None and len(durations) >= rounds:
            return durations
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {rounds} poll rounds in {timeout:.0f} s")

"""Cold ``cp -r`` of a folder of 256 KB attachments, downloads per attachment, and O365.

The folder holds 400 messages with one 256 KB attachment each (100 with ``--quick``).
Several such folders (different content) give several cold copies on one mount; each copy
is timed right after the plain downloader fetched the same folder with 4 requests in flight.
The listing is made before the copy starts (``ls``), so the copy is timed against the
download alone.

After the first cold copy, the same folder is copied again and checksummed: the emulator's
count of bytes sent against the bytes the tools read shows that each attachment was
downloaded once. Last, the O365 package downloads a folder the way a script written by hand
would, with O365's default pause between requests and without it.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.emulator import Emulator

from . import bounds, o365, rig
from .profile import profiled
from .results import Row, Target

log = logging.getLogger(__name__)

MAILBOX = "copy@example.com"
TARGETS = 2
_VALUE_ROUTE = "GET /users/{mailbox}/messages/{message}/attachments/{attachment}/$value"
_MB = 1e6


def run(options: rig.Options) -> list[Row]:
    files = 100 if options.quick else 400
    samples = 2 if options.quick else 3
    # One more folder than samples, for O365.
    spec = (
        f"address={MAILBOX},folders={samples + 1},messages={files},attachments=1,size=256k,seed=21"
    )
    work = options.work / "copying"
    details: list[str] = []
    mount_rates: list[float] = []
    bound_rates: list[float] = []
    rows: list[Row] = []
    with rig.emulator(options, "copying", [spec]) as emulator:
        ids = rig.folder_ids(emulator, MAILBOX)
        names = [f"Folder {number:02d}" for number in range(1, samples + 2)]
        for name in names:
            rig.materialise(emulator, MAILBOX, ids[f"Inbox/{name}"])

        with rig.mounted(emulator, MAILBOX, work) as mount:
            for index, name in enumerate(names[:samples]):
                listing = bounds.list_folder(emulator, MAILBOX, ids[f"Inbox/{name}"])
                plain = bounds.download_all(
                    emulator, MAILBOX, listing.attachments, work / f"plain-{index}"
                )
                shutil.rmtree(work / f"plain-{index}")
                bound_rates.append(plain.bytes / plain.seconds)

                source = mount.mountpoint / "Inbox" / name
                copy = work / f"copy-{index}"
                rig.timed(["ls", source])
                emulator.reset_stats()
                profile = options.work / "profiles" / "cold-cp.txt"
                with profiled(options.profile and index == 0, mount.pid, profile, details):
                    seconds = rig.timed(["cp", "-r", source, copy])
                copied_files, copied_bytes = rig.tree_bytes(copy)
                mount_rates.append(copied_bytes / seconds)
                stats = emulator.stats()
                details.append(
                    f"{name}: cp {seconds:.2f} s for {copied_files} files, "
                    f"{stats['peak_in_flight']} requests in flight at most, "
                    f"{stats['requests_by_status'].get('429', 0)} answered 429; plain "
                    f"downloader {plain.seconds:.2f} s ({plain.refused} concurrency 429s)"
                )
                if index == 0:
                    rows.append(_downloaded_once(emulator, source, copy, work, copied_bytes))
                shutil.rmtree(copy)

        mount_rate, bound_rate = rig.median(mount_rates), rig.median(bound_rates)
        rows.insert(
            0,
            Row(
                f"cold cp -r, {files} x 256 KB",
                f"{mount_rate / _MB:.1f} MB/s",
                f"{bound_rate / _MB:.1f} MB/s",
                mount_rate / bound_rate,
                Target(">=", 0.8),
                details=details,
            ),
        )
        special_ids = _o365_with_special_ids(options, emulator, names[-1], work)
    rows.extend(_o365_rows(options, files, work, mount_rate, special_ids))
    return rows


def _downloaded_once(emulator: Emulator, source: Path, copy: Path, work: Path, size: int) -> Row:
    """Copy again and checksum the folder; compare the bytes Graph sent with those read."""
    again = work / "copy-again"
    rig.timed(["cp", "-r", source, again])
    shutil.rmtree(again)
    names = sorted(path.name for path in source.iterdir())
    subprocess.run(["sha256sum", *names], cwd=source, check=True, stdout=subprocess.DEVNULL)
    stats = emulator.stats()
    sent = int(stats["bytes_sent"])
    delivered = 3 * size
    value_requests = sum(stats["requests"].get(_VALUE_ROUTE, {}).values())
    return Row(
        "each attachment downloaded at most once",
        f"{sent / _MB:.1f} MB sent for {delivered / _MB:.1f} MB read",
        f"{size / _MB:.1f} MB of content",
        sent / size,
        Target("<=", 1.0),
        details=[
            f"cold cp, second cp and sha256sum read {delivered:,} bytes; Graph sent "
            f"{sent:,} ({sent / delivered:.3f} of what was read) in {value_requests} "
            f"$value requests for {len(names)} files"
        ],
    )


def _o365_with_special_ids(
    options: rig.Options, emulator: Emulator, folder: str, work: Path
) -> str:
    """What happens to O365 with ids as Graph makes them (with ``/``, ``+`` and ``=``)."""
    try:
        result = o365.download_folder(options, emulator, MAILBOX, folder, work / "o365-ids", 0)
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1]
        found = re.search(r"(\d{3}) Client Error.*for url: (\S+) \| Error Message: (.*)", last)
        if found:
            status, url, message = found.groups()
            last = f"{status} {message} for {urlsplit(url).path}"
        return f"with Graph's ids (they contain /, + and =) the O365 script fails: {last}"
    finally:
        shutil.rmtree(work / "o365-ids", ignore_errors=True)
    return f"with Graph's ids (containing /, + and =) O365 saved {result.files} files"


def _o365_rows(
    options: rig.Options, files: int, work: Path, mount_rate: float, special_ids: str
) -> list[Row]:
    """O365 over a folder like the copied ones, against its own plain-downloader bound.

    O365 puts ids into URLs without percent-encoding them, so it runs against an emulator
    whose ids are URL-safe.
    """
    spec = f"address={MAILBOX},folders=1,messages={files},attachments=1,size=256k,seed=22"
    rows = []
    with rig.emulator(options, "o365", [spec], "--quirk", "special_ids=off") as emulator:
        folder_id = rig.folder_ids(emulator, MAILBOX)["Inbox/Folder 01"]
        rig.materialise(emulator, MAILBOX, folder_id)
        listing = bounds.list_folder(emulator, MAILBOX, folder_id)
        plain = bounds.download_all(emulator, MAILBOX, listing.attachments, work / "plain-o365")
        shutil.rmtree(work / "plain-o365")
        bound_rate = plain.bytes / plain.seconds
        for delay in (200, 0):
            destination = work / f"o365-{delay}"
            emulator.reset_stats()
            result = o365.download_folder(
                options, emulator, MAILBOX, "Folder 01", destination, delay
            )
            shutil.rmtree(destination, ignore_errors=True)
            stats = emulator.stats()
            rate = result.bytes / result.seconds
            rows.append(
                Row(
                    f"O365 {result.version} script, requests_delay={delay} ms",
                    f"{rate / _MB:.1f} MB/s",
                    f"{bound_rate / _MB:.1f} MB/s",
                    rate / bound_rate,
                    details=[
                        f"{result.files} files from {result.messages} messages in "
                        f"{result.seconds:.1f} s, {rig.graph_requests(stats)} Graph requests, "
                        f"{stats['bytes_sent'] / _MB:.1f} MB sent (base64 in JSON); the "
                        f"mount's cold cp was {mount_rate / rate:.1f}x as fast"
                    ],
                )
            )
    rows[0].details.append(special_ids)
    return rows

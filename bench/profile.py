"""Where the mount spends its time: py-spy samples of the mount process during a benchmark.

With ``--profile``, a benchmark wraps its measured step in ``profiled(...)``: py-spy records
the mount process, and a few lines naming the hottest functions (by samples where the
function itself was running, and by samples where it was on the stack) join the details.
The raw samples stay in the work directory for a closer look. py-spy's sampling slows the
mount a little, so timings taken with ``--profile`` are slightly pessimistic.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_LINE_NUMBER = re.compile(r":\d+\)")
_RATE = "200"


def py_spy() -> str | None:
    """The py-spy executable, next to this Python or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@contextlib.contextmanager
def profiled(enabled: bool, pid: int, output: Path, summary: list[str]) -> Iterator[None]:
    """Sample process ``pid`` while the block runs; append a summary to ``summary``."""
    executable = py_spy() if enabled else None
    if executable is None:
        if enabled:
            summary.append("profile: py-spy is not installed (pip install py-spy)")
        yield
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen(
        [executable, "record", "--pid", str(pid), "--rate", _RATE, "--format", "raw",
         "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()
    if output.exists():
        summary.extend(summarise(output))
    else:
        summary.append("profile: py-spy wrote no samples")


def summarise(path: Path, count: int = 5) -> list[str]:
    """The hottest functions of a py-spy raw (collapsed stacks) file."""
    own: collections.Counter[str] = collections.Counter()
    on_stack: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            if "exchange_fuse/" in frame:
                on_stack[frame] += samples
    if not total:
        return ["profile: no samples"]

    def describe(counter: collections.Counter[str]) -> str:
        hottest = counter.most_common(count)
        return "; ".join(f"{100 * samples / total:.0f}% {frame}" for frame, samples in hottest)

    return [
        f"profile ({total} samples, {path.name}) self: {describe(own)}",
        f"profile on stack (exchange_fuse): {describe(on_stack)}",
    ]

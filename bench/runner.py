"""Run the benchmarks and print one table: ``python -m bench [--quick] [--only NAME ...]``.

Each benchmark starts its own emulator (with ``--latency-ms``, 50 by default) and its own
mounts, measures the mount and a bound in the same run, and returns rows. A benchmark that
fails is reported as an error row whose targets count as missed; the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from . import attributes, copying, listing, memory, polling, reading, rig, startup
from .results import Row, failed_row, table, write_json

log = logging.getLogger(__name__)

BENCHMARKS: dict[str, ModuleType] = {
    "startup": startup,
    "listing": listing,
    "copying": copying,
    "reading": reading,
    "attributes": attributes,
    "polling": polling,
    "memory": memory,
}


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": _code_version(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def _code_version() -> str:
    """The commit measured, and whether the package had changes not yet committed."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "exchange_fuse"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} with uncommitted changes to exchange_fuse" if changed else commit


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark exchange-mount against bounds measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=50.0, help="emulator latency per request"
    )
    parser.add_argument("--work-dir", type=Path, help="where mounts, caches and copies go")
    parser.add_argument("--keep-work", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--o365-venv", type=Path, help="a virtualenv for O365 (made if missing, then reused)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample the mount with py-spy during key steps"
    )
    return parser.parse_args(argv)


def run_all(
    names: Sequence[str], options: rig.Options, report: Callable[[str, list[Row]], None]
) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        module = BENCHMARKS[name]
        log.info("running %s", name)
        started = time.monotonic()
        try:
            found: list[Row] = module.run(options)
        except Exception as exc:
            log.exception("benchmark %s failed", name)
            found = failed_row(name, exc, module.TARGETS)
        log.info("%s done in %.0f s", name, time.monotonic() - started)
        report(name, found)
        rows.extend(found)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = arguments.work_dir or Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    options = rig.Options(
        work=work.resolve(),
        latency_ms=arguments.latency_ms,
        quick=arguments.quick,
        o365_venv=arguments.o365_venv.resolve() if arguments.o365_venv else None,
        profile=arguments.profile,
    )
    names = arguments.only or list(BENCHMARKS)
    context = {
        **machine(),
        "mode": "quick" if arguments.quick else "full",
        "latency_ms": arguments.latency_ms,
        "benchmarks": names,
    }
    log.info("work directory %s", work)

    def report(name: str, rows: list[Row]) -> None:
        # Partial results survive a run that is stopped half way.
        print(table(rows).rsplit("\n\n", 1)[0], file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        rows = run_all(names, options, report)
    finally:
        if not arguments.keep_work:
            _remove_work(work)
    context["seconds"] = round(time.monotonic() - started)

    print(
        f"exchange-mount benchmarks, {context['mode']} mode, {context['date']}: "
        f"{context['nproc']} x {context['cpu']}, kernel {context['kernel']}, "
        f"emulator latency {arguments.latency_ms:g} ms, {context['seconds']} s, "
        f"code {context['code']}"
    )
    print(table(rows))
    if arguments.json:
        write_json(arguments.json, rows, context)
    return 0


def _remove_work(work: Path) -> None:
    """Delete the work directory, unless something is still mounted inside it."""
    prefix = str(work.resolve()) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            path = line.split()[4].encode().decode("unicode_escape")
            if path.startswith(prefix):
                log.warning("%s is still mounted; keeping %s", path, work)
                return
    shutil.rmtree(work, ignore_errors=True)

"""The ``exchange-mount`` command: parse options, set up logging, run the mount.

A user mistake ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import trio

from . import __version__, config
from .check import Report, run_check
from .mount import StartupError, serve

log = logging.getLogger(__name__)

DEMO_MAILBOX = "demo@example.com"
_READY = b"ready\n"


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="exchange-mount",
        description="Mount Exchange Online mailboxes as a filesystem of attachments. "
        "'exchange-mount check [options]' tries the configuration without mounting.",
    )
    result.add_argument("mountpoint", nargs="?", help="directory to mount on")
    result.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    result.add_argument(
        "--demo",
        action="store_true",
        help="mount a built-in sample mailbox served by a local Graph emulator",
    )
    result.add_argument(
        "--background",
        action="store_true",
        help="return once the mount is live and keep serving in the background",
    )
    result.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    result.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    config.add_arguments(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["check"]:
        return check(arguments[1:])
    args = parser().parse_args(arguments)
    try:
        if args.background:
            return _start_in_background(args, arguments)
        with _demo_emulator(args.demo) as demo_values:
            settings = _settings(args, demo_values)
            setup_logging(settings.log_level, settings.log_file)
            trio.run(functools.partial(serve, settings, on_ready=_ready_reporter(args.ready_fd)))
    except (config.ConfigError, StartupError) as exc:
        _report_failure(args.ready_fd, str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def check(arguments: list[str]) -> int:
    """``exchange-mount check``: try sign-in, permissions and every mailbox; 0 if all is well."""
    check_parser = parser()
    check_parser.prog = "exchange-mount check"
    check_parser.description = "Check the configuration against Graph and say what is wrong."
    args = check_parser.parse_args(arguments)
    try:
        with _demo_emulator(args.demo) as demo_values:
            settings = _settings(args, demo_values, require_mountpoint=False)
            setup_logging(args.log_level or "ERROR", settings.log_file)
            passed = trio.run(run_check, settings, Report())
    except config.ConfigError as exc:
        print(f"FAIL  configuration: {exc}")
        return 1
    except StartupError as exc:
        print(f"FAIL  {exc}")
        return 1
    print("all checks passed" if passed else "some checks failed")
    return 0 if passed else 1


def _settings(
    args: argparse.Namespace,
    demo_values: dict[str, Any] | None,
    *,
    require_mountpoint: bool = True,
) -> config.Config:
    if args.demo and args.config:
        raise config.ConfigError("--demo serves its own sample mailbox: leave out --config")
    flags = {option.key: getattr(args, option.key, None) for option in config.OPTIONS}
    toml_values = config.read_toml(args.config) if args.config else {}
    environment: dict[str, str] = dict(os.environ)
    if demo_values is not None:
        flags.update(
            tenant=demo_values["tenant_id"],
            client_id=demo_values["client_id"],
            mailbox=[DEMO_MAILBOX],
            graph_url=demo_values["graph_url"],
            authority_url=demo_values["authority_url"],
            ca_bundle=demo_values["ca_bundle"],
        )
        environment[config.SECRET_ENVIRONMENT_VARIABLE] = demo_values["client_secret"]
    return config.build(
        args.mountpoint,
        flags,
        toml_values,
        environment=environment,
        require_mountpoint=require_mountpoint,
    )


@contextlib.contextmanager
def _demo_emulator(enabled: bool) -> Iterator[dict[str, Any] | None]:
    """With --demo, run the Graph emulator with the sample mailbox for as long as the mount."""
    if not enabled:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="exchange-fuse-demo-") as state_dir:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exchange_fuse.emulator",
                "--demo",
                "--port",
                "0",
                "--state-dir",
                state_dir,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            yield _wait_for_emulator(Path(state_dir) / "emulator.json", process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for_emulator(descriptor: Path, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if descriptor.exists():
            values: dict[str, Any] = json.loads(descriptor.read_text())
            return values
        if process.poll() is not None:
            assert process.stderr is not None
            detail = process.stderr.read().decode(errors="replace").strip().splitlines()
            raise StartupError(
                "the demo emulator did not start: " + (detail[-1] if detail else "no output")
            )
        time.sleep(0.05)
    raise StartupError("the demo emulator did not start within 60 seconds")


def _start_in_background(args: argparse.Namespace, arguments: list[str]) -> int:
    """Run the mount in a child process and return once it reports the mount live."""
    settings = None if args.demo else _settings(args, None)
    log_file = (settings.log_file if settings else None) or _default_log_file(args)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    child_arguments = [a for a in arguments if a != "--background"]
    with open(log_file, "ab") as log_output:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exchange_fuse",
                *child_arguments,
                "--ready-fd",
                str(write_end),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_output,
            stderr=log_output,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        message = report.read()
    if message == _READY:
        mountpoint = settings.mountpoint if settings else args.mountpoint
        print(f"mounted at {mountpoint} (pid {child.pid}, log {log_file})")
        return 0
    child.wait()
    text = message.decode(errors="replace").strip()
    print(
        f"exchange-mount: {text or f'the mount process exited ({child.returncode})'}",
        file=sys.stderr,
    )
    return 1


def _default_log_file(args: argparse.Namespace) -> Path:
    import platformdirs

    name = "demo.log" if args.demo else "exchange-mount.log"
    return Path(platformdirs.user_cache_dir("exchange-fuse")) / name


def _ready_reporter(ready_fd: int | None) -> Any:
    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, _READY)
            os.close(ready_fd)

    return ready


def _report_failure(ready_fd: int | None, message: str) -> None:
    print(f"exchange-mount: {message}", file=sys.stderr)
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, message.encode())
            os.close(ready_fd)


class _JournalFormatter(logging.Formatter):
    """Priority prefixes the journal understands; it adds its own timestamps."""

    _PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
    }

    def format(self, record: logging.LogRecord) -> str:
        priority = self._PRIORITY.get(record.levelno, 2)
        return f"<{priority}>{record.name}: {super().format(record)}"


def _stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    device, inode = stream.split(":", 1)
    try:
        status = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{status.st_dev}:{status.st_ino}" == f"{device}:{inode}"


def setup_logging(level: str, log_file: Path | None = None) -> None:
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    if log_file is None and _stderr_is_journal():
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request lines from the HTTP stack would drown the log and can carry URLs with ids.
    for noisy in ("httpx", "httpcore", "msal", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


if __name__ == "__main__":
    sys.exit(main())

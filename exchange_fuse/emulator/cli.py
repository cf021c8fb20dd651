"""The ``exchange-graph-emulator`` command line."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import time
from pathlib import Path

import platformdirs
import trio

from exchange_fuse.emulator.app import Emulator
from exchange_fuse.emulator.auth import GRAPH_SCOPE, Authority, Credentials, load_certificate
from exchange_fuse.emulator.demo import add_demo
from exchange_fuse.emulator.faults import INJECTABLE, Settings
from exchange_fuse.emulator.generate import generate, parse_spec
from exchange_fuse.emulator.ids import IdCodec
from exchange_fuse.emulator.load import LoadError, load_path, parse_size
from exchange_fuse.emulator.quirks import Quirks
from exchange_fuse.emulator.server import run
from exchange_fuse.emulator.store import Store

log = logging.getLogger(__name__)

DEFAULT_TENANT_ID = "6f1c2d3e-4b5a-4c7d-9e8f-0a1b2c3d4e5f"
DEFAULT_CLIENT_ID = "0d9e8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


class UsageError(Exception):
    """A bad argument; reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _mailbox_source(text: str) -> tuple[str, Path]:
    address, sep, path = text.partition("=")
    if not sep or "@" not in address or not path:
        raise argparse.ArgumentTypeError(f"expected ADDRESS=PATH, got {text!r}")
    return address.strip(), Path(path)


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1")
    return rate


def _error_rate(text: str) -> tuple[int, float]:
    status, sep, rate = text.partition("=")
    if not sep or not status.isdigit() or int(status) not in INJECTABLE:
        raise argparse.ArgumentTypeError(
            f"expected STATUS=RATE with STATUS one of {sorted(INJECTABLE)}, got {text!r}"
        )
    return int(status), _rate(rate)


def _bandwidth(text: str) -> int:
    try:
        return parse_size(text, "--bandwidth")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _non_negative(kind: type[int] | type[float]):  # type: ignore[no-untyped-def]
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} is negative")
        return value

    return convert


def _quirk(text: str) -> tuple[str, bool]:
    name, sep, value = text.partition("=")
    if not sep or value.lower() not in ("on", "off") or name not in Quirks.names():
        raise argparse.ArgumentTypeError(
            f"expected NAME=on|off with NAME one of {', '.join(Quirks.names())}, got {text!r}"
        )
    return name, value.lower() == "on"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="exchange-graph-emulator",
        description="A Microsoft Graph mail emulator served over HTTPS on 127.0.0.1.",
    )
    source = parser.add_argument_group("mailboxes")
    source.add_argument(
        "--mailbox",
        action="append",
        default=[],
        type=_mailbox_source,
        metavar="ADDRESS=PATH",
        help="a directory of .eml files (subdirectories are folders) or a .json/.toml file",
    )
    source.add_argument(
        "--generate",
        action="append",
        default=[],
        metavar="SPEC",
        help="a synthetic mailbox, e.g. address=big@example.com,folders=3,messages=20000",
    )
    source.add_argument("--demo", action="store_true", help="serve demo@example.com")

    serving = parser.add_argument_group("serving")
    serving.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    serving.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where emulator.json and the CA bundle go",
    )
    serving.add_argument("--tenant-id", default=DEFAULT_TENANT_ID)
    serving.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    serving.add_argument(
        "--client-secret", default=None, help="the secret to accept (default: a new random one)"
    )
    serving.add_argument(
        "--cert",
        action="append",
        default=[],
        type=Path,
        metavar="PEM",
        help="a public certificate whose key may sign client assertions",
    )
    serving.add_argument(
        "--app-roles",
        default="Mail.ReadWrite",
        metavar="ROLES",
        help="application permissions the app holds, comma-separated (empty: none, as with a "
        "delegated permission only or no admin consent)",
    )
    serving.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="run the token endpoint's clock this far ahead (negative: behind)",
    )
    serving.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])

    faults = parser.add_argument_group("limits and faults (also settable at run time)")
    faults.add_argument("--latency-ms", type=_non_negative(float), default=0.0)
    faults.add_argument(
        "--bandwidth", type=_bandwidth, default=0, help="bytes per second per response (e.g. 2m)"
    )
    faults.add_argument("--max-concurrency", type=_non_negative(int), default=4)
    faults.add_argument("--mailbox-budget", type=_non_negative(int), default=10_000)
    faults.add_argument("--budget-window", type=_non_negative(float), default=600.0)
    faults.add_argument("--token-lifetime", type=_non_negative(int), default=3600)
    faults.add_argument(
        "--error-rate", action="append", default=[], type=_error_rate, metavar="STATUS=RATE"
    )
    faults.add_argument("--error-retry-after", type=_non_negative(int), default=None)
    faults.add_argument("--throttle-rate", type=_rate, default=0.0)
    faults.add_argument("--cut-rate", type=_rate, default=0.0)
    faults.add_argument("--deny", action="append", default=[], metavar="ADDRESS")
    faults.add_argument("--disable", action="append", default=[], metavar="ADDRESS")
    faults.add_argument("--delta-generations", type=_non_negative(int), default=3)
    faults.add_argument("--fault-seed", type=int, default=None)
    faults.add_argument("--quirk", action="append", default=[], type=_quirk, metavar="NAME=on|off")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    quirks = Quirks()
    for name, enabled in args.quirk:
        quirks.set(name, enabled)
    return Settings(
        latency_ms=args.latency_ms,
        bandwidth_bytes_per_s=args.bandwidth,
        error_rates=dict(args.error_rate),
        error_retry_after_s=args.error_retry_after,
        throttle_rate=args.throttle_rate,
        cut_rate=args.cut_rate,
        token_lifetime_s=args.token_lifetime,
        max_concurrency=args.max_concurrency,
        mailbox_budget=args.mailbox_budget,
        budget_window_s=args.budget_window,
        denied_mailboxes={a.lower() for a in args.deny},
        disabled_mailboxes={a.lower() for a in args.disable},
        delta_generations=args.delta_generations,
        seed=args.fault_seed,
        quirks=quirks,
    )


def build_emulator(args: argparse.Namespace) -> Emulator:
    """Everything but the serving, from parsed arguments; raises UsageError."""
    if not (args.mailbox or args.generate or args.demo):
        raise UsageError("nothing to serve: give --mailbox, --generate or --demo")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number")
    settings = settings_from(args)
    store = Store(IdCodec(special=settings.quirks.special_ids))
    started = time.perf_counter()
    if args.demo:
        add_demo(store)
    for address, path in args.mailbox:
        try:
            load_path(store.mailbox(address, create=True), path)
        except LoadError as error:
            raise UsageError(str(error)) from None
    for text in args.generate:
        try:
            spec = parse_spec(text)
        except ValueError as error:
            raise UsageError(f"--generate {text}: {error}") from None
        generate(store, spec)
    log.info("mailboxes ready in %.2f s", time.perf_counter() - started)

    certificates = []
    for path in args.cert:
        try:
            certificates.append(load_certificate(path))
        except (OSError, ValueError) as error:
            raise UsageError(f"--cert {path}: not a readable PEM certificate ({error})") from None
    credentials = Credentials(
        tenant_id=args.tenant_id,
        client_id=args.client_id,
        client_secret=args.client_secret or secrets.token_urlsafe(30),
    )
    return Emulator(
        store,
        settings,
        Authority(
            credentials,
            certificates,
            accepted_scopes={GRAPH_SCOPE},
            roles=tuple(role.strip() for role in args.app_roles.split(",") if role.strip()),
            clock_offset=args.clock_offset,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=args.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
        emulator = build_emulator(args)
        state_dir = args.state_dir or Path(platformdirs.user_state_dir("exchange-graph-emulator"))
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--state-dir {state_dir}: {error.strerror}") from None
    except UsageError as error:
        print(f"exchange-graph-emulator: error: {error}", file=sys.stderr)
        return 2
    try:
        trio.run(run, emulator, state_dir, args.port)
    except KeyboardInterrupt:
        pass
    except (OSError, ExceptionGroup) as error:
        print(f"exchange-graph-emulator: error: cannot serve: {_root(error)}", file=sys.stderr)
        return 1
    return 0


def _root(error: BaseException) -> BaseException:
    """The first error inside (nested) exception groups, which is the one worth printing."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error

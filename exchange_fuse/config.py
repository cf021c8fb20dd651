"""Configuration: every option once, read from a TOML file and overridden by flags.

Each option is declared a single time in ``OPTIONS`` with its TOML key, its flag, its type
and its help text; the command line, the TOML reader and the configuration reference are all
built from that table. Secrets never come from the command line: the client secret is read
from a file, the ``EXCHANGE_FUSE_CLIENT_SECRET`` environment variable or a systemd credential.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from . import naming
from .auth import ClientCertificate

SECRET_ENVIRONMENT_VARIABLE = "EXCHANGE_FUSE_CLIENT_SECRET"
SECRET_CREDENTIAL_NAME = "client-secret"
PASSPHRASE_ENVIRONMENT_VARIABLE = "EXCHANGE_FUSE_CERTIFICATE_PASSPHRASE"
PASSPHRASE_CREDENTIAL_NAME = "certificate-passphrase"

CLOUDS: Mapping[str, tuple[str, str]] = {
    # name: (Graph root, token authority host)
    "global": ("https://graph.microsoft.com", "https://login.microsoftonline.com"),
    "usgov": ("https://graph.microsoft.us", "https://login.microsoftonline.us"),
    "usgov-dod": ("https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
    "china": ("https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
}


class ConfigError(Exception):
    """A bad option: the message names the option and what is wrong with it."""


# -- value parsers: each takes the raw value (from TOML or a flag) and returns the typed one.


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty text")
    return value.strip()


def _path(value: Any) -> Path:
    return Path(os.path.expanduser(_text(value)))


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


def _texts(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("expected a text or a list of texts")
    return tuple(_text(item) for item in items)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValueError("expected a size such as 500M, 2G or a number of bytes")
    number, unit = match.groups()
    power = "KMGT".find(unit.upper()) + 1 if unit else 0
    return int(float(number) * 1024**power)


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if isinstance(value, bool) or not 0 < seconds < 1e9:  # also refuses nan and infinity
        raise ValueError("expected a positive number of seconds")
    return seconds


def _count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("expected a whole number") from None
    # Ids and counts fit 32 bits (uid_t); anything larger would fail only once mounted.
    if not 0 <= number < 2**32 - 1:
        raise ValueError("expected a whole number from 0 to 4294967294")
    return number


def _umask(value: Any) -> int:
    # A TOML integer cannot say whether 22 meant octal: only text is unambiguous.
    if not isinstance(value, str):
        raise ValueError('expected an octal mask written as text, such as "022"')
    try:
        mask = int(value, 8)
    except ValueError:
        raise ValueError("expected an octal mask such as 022") from None
    if not 0 <= mask <= 0o777:
        raise ValueError("expected an octal mask between 000 and 777")
    return mask


def _https_url(value: Any) -> str:
    try:
        url = urlsplit(_text(value))
        valid = url.scheme == "https" and bool(url.hostname) and url.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise ValueError("expected an https:// URL with a host name")
    return url.geturl()


def _proxy_url(value: Any) -> str:
    try:
        url = urlsplit(_text(value))
        valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise ValueError("expected a proxy URL such as http://proxy.example:3128")
    return url.geturl()


def _ca_bundle(value: Any) -> Path:
    path = _path(value)
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (OSError, ssl.SSLError):
        raise ValueError("not a PEM file of CA certificates") from None
    return path


def _log_file(value: Any) -> Path:
    path = _path(value)
    if path.is_dir():
        raise ValueError("expected a file, not a directory")
    if not path.parent.is_dir():
        raise ValueError(f"its directory {path.parent} does not exist")
    return path


def _mailboxes(value: Any) -> tuple[str, ...]:
    addresses = _texts(value)
    if not addresses:
        raise ValueError("expected at least one mailbox address")
    seen: set[str] = set()
    for address in addresses:
        if "@" not in address or " " in address:
            raise ValueError(f"{address!r} is not a mailbox address")
        if address.casefold() in seen:
            raise ValueError(f"{address!r} is listed twice")
        seen.add(address.casefold())
    return addresses


def _cloud(value: Any) -> str:
    name = _text(value).lower()
    if name not in CLOUDS:
        raise ValueError(f"expected one of {', '.join(CLOUDS)}")
    return name


def _log_level(value: Any) -> str:
    level = _text(value).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("expected debug, info, warning or error")
    return level


def _template(value: Any) -> str:
    template = _text(value)
    naming.check_template(template)
    return template


def _empty_message_action(value: Any) -> str:
    action = _text(value)
    if action in {"delete", "keep"} or (action.startswith("move:") and action[5:].strip("/")):
        return action
    raise ValueError("expected delete, keep or move:<folder path>")


@dataclass(frozen=True, slots=True)
class Option:
    key: str
    parse: Callable[[Any], Any]
    help: str
    metavar: str | None = None
    repeatable: bool = False
    is_flag: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("mountpoint", _path, "where to mount (instead of the MOUNTPOINT argument)", "DIR"),
    Option("tenant", _text, "Entra ID tenant (directory) id or domain", "ID"),
    Option("client_id", _text, "application (client) id of the app registration", "ID"),
    Option(
        "client_secret_file",
        _path,
        f"file holding the client secret (or set {SECRET_ENVIRONMENT_VARIABLE})",
        "FILE",
    ),
    Option(
        "certificate_file",
        _path,
        "sign in with a certificate instead of a secret: a PEM file with the private key and "
        f"the certificate, or a .pfx/.p12 file (passphrase in {PASSPHRASE_ENVIRONMENT_VARIABLE})",
        "FILE",
    ),
    Option(
        "mailbox",
        _mailboxes,
        "mailbox address to mount; repeat for several mailboxes",
        "ADDRESS",
        repeatable=True,
    ),
    Option("cloud", _cloud, "national cloud: global, usgov, usgov-dod or china", "NAME"),
    Option("graph_url", _https_url, "Graph API base URL (overrides --cloud)", "URL"),
    Option(
        "authority_url",
        _https_url,
        "token authority URL, with the tenant (overrides --cloud)",
        "URL",
    ),
    Option(
        "ca_bundle",
        _ca_bundle,
        "PEM file of CA certificates to trust for Graph and sign-in",
        "FILE",
    ),
    Option("proxy", _proxy_url, "HTTPS proxy URL for Graph and sign-in", "URL"),
    Option("cache_dir", _path, "directory for downloaded attachments", "DIR"),
    Option("cache_max_size", _size, "largest size of the attachment cache (e.g. 2G)", "SIZE"),
    Option("read_only", _boolean, "refuse rm: nothing in the mailbox is changed", is_flag=True),
    Option(
        "inline", _boolean, "show inline attachments (signature logos and the like)", is_flag=True
    ),
    Option("hidden_folders", _boolean, "show hidden mail folders", is_flag=True),
    Option(
        "xattrs",
        _boolean,
        "show message details and mount status as extended attributes (getfattr -d)",
        is_flag=True,
    ),
    Option("uid", _count, "owner of every file (default: the mounting user)", "UID"),
    Option("gid", _count, "group of every file (default: the mounting user's group)", "GID"),
    Option("umask", _umask, "permission bits to clear (default 022)", "MASK"),
    Option("allow_other", _boolean, "let other users into the mount", is_flag=True),
    Option(
        "poll_interval", _seconds, "seconds between checks for new mail (default 60)", "SECONDS"
    ),
    Option(
        "timeout", _seconds, "longest a file operation waits for Graph (default 120)", "SECONDS"
    ),
    Option(
        "request_timeout",
        _seconds,
        "seconds to wait for one Graph answer before trying again (default 30)",
        "SECONDS",
    ),
    Option(
        "retry_attempts",
        _count,
        "tries of a failed Graph request, the first included (default 10)",
        "COUNT",
    ),
    Option(
        "retry_time",
        _seconds,
        "seconds after which a failing Graph request is not tried again (default 45)",
        "SECONDS",
    ),
    Option(
        "retry_backoff",
        _seconds,
        "first wait before trying a failed Graph request again, doubling up to 8 s "
        "(default 0.5; a Retry-After from Graph wins)",
        "SECONDS",
    ),
    Option("log_level", _log_level, "debug, info, warning or error (default info)", "LEVEL"),
    Option(
        "log_file",
        _log_file,
        "write the log here (default with --background: exchange-mount.log in the user's "
        "cache directory)",
        "FILE",
    ),
    Option(
        "on_empty_message",
        _empty_message_action,
        "what rm does to a message left without attachments: delete (default), keep, or "
        "move:<folder path>",
        "ACTION",
    ),
    Option(
        "name_template",
        _template,
        "file name template, e.g. '{received:%%Y-%%m-%%d} {subject}-{attachment}'",
        "TEXT",
    ),
    Option(
        "include",
        _texts,
        "show only file names matching this glob (repeatable)",
        "GLOB",
        repeatable=True,
    ),
    Option(
        "exclude",
        _texts,
        "hide file names matching this glob (repeatable)",
        "GLOB",
        repeatable=True,
    ),
    Option(
        "exclude_folder",
        _texts,
        "leave out this folder path and below (repeatable)",
        "PATH",
        repeatable=True,
    ),
)
_BY_KEY = {option.key: option for option in OPTIONS}


@dataclass(frozen=True)
class Config:
    mountpoint: Path
    tenant: str
    client_id: str
    # Exactly one of the two credentials is set.
    client_secret: str | None = field(repr=False)
    certificate: ClientCertificate | None = field(repr=False)
    mailboxes: tuple[str, ...]
    graph_url: str
    authority_url: str
    scope: str
    ca_bundle: Path | None = None
    proxy: str | None = None
    cache_dir: Path = Path()
    cache_max_size: int = 2 * 1024**3
    read_only: bool = False
    inline: bool = False
    hidden_folders: bool = False
    xattrs: bool = False
    uid: int = 0
    gid: int = 0
    umask: int = 0o022
    allow_other: bool = False
    poll_interval: float = 60.0
    timeout: float = 120.0
    request_timeout: float = 30.0
    retry_attempts: int = 10
    retry_time: float = 45.0
    retry_backoff: float = 0.5
    log_level: str = "INFO"
    log_file: Path | None = None
    on_empty_message: str = "delete"
    name_template: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    exclude_folder: tuple[str, ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option; values stay None unless given, so TOML can fill the rest."""
    for option in OPTIONS:
        if option.key == "mountpoint":
            continue  # the command's MOUNTPOINT argument
        if option.is_flag:
            parser.add_argument(
                option.flag, action="store_const", const=True, default=None, help=option.help
            )
        elif option.repeatable:
            parser.add_argument(
                option.flag,
                action="append",
                default=None,
                metavar=option.metavar,
                help=option.help,
            )
        else:
            parser.add_argument(
                option.flag, default=None, metavar=option.metavar, help=option.help
            )


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if "mailboxes" in data and "mailbox" not in data:
        data["mailbox"] = data.pop("mailboxes")
    unknown = sorted(set(data) - set(_BY_KEY))
    if unknown:
        raise ConfigError(f"{path}: unknown option {unknown[0]!r}")
    return data


def build(
    mountpoint: str | Path | None,
    flags: Mapping[str, Any],
    toml_values: Mapping[str, Any],
    *,
    environment: Mapping[str, str] = os.environ,
    require_mountpoint: bool = True,
) -> Config:
    """Merge flags over TOML values, check every value, and read the secret."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = flags.get(option.key)
        source = option.flag
        if raw is None:
            raw, source = toml_values.get(option.key), option.key
        if raw is None:
            continue
        if option.repeatable and isinstance(raw, list) and source == option.flag:
            raw = list(raw)
        try:
            values[option.key] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}, got {raw!r}") from None

    mountpoint = mountpoint or values.pop("mountpoint", None)
    values.pop("mountpoint", None)
    if not mountpoint and require_mountpoint:
        raise ConfigError("no mountpoint given (MOUNTPOINT argument or mountpoint in the file)")
    for required in ("tenant", "client_id", "mailbox"):
        if required not in values:
            raise ConfigError(f"{_BY_KEY[required].flag} is required (or {required} in the file)")

    cloud_graph, cloud_login = CLOUDS[values.pop("cloud", "global")]
    graph_url = values.pop("graph_url", cloud_graph + "/v1.0").rstrip("/")
    authority_url = values.pop("authority_url", f"{cloud_login}/{values['tenant']}").rstrip("/")
    graph_root = re.sub(r"/v1\.0$|/beta$", "", graph_url)
    certificate_file = values.pop("certificate_file", None)
    secret_file = values.pop("client_secret_file", None)
    certificate = None
    secret = None
    if certificate_file is not None:
        if secret_file is not None:
            raise ConfigError("give client_secret_file or certificate_file, not both")
        certificate = _read_certificate(certificate_file, environment)
    else:
        secret = _read_secret(secret_file, environment)

    user_uid, user_gid = os.getuid(), os.getgid()
    cache_dir = values.pop("cache_dir", None) or _default_cache_dir(environment)
    return Config(
        mountpoint=Path(mountpoint or "."),
        tenant=values.pop("tenant"),
        client_id=values.pop("client_id"),
        client_secret=secret,
        certificate=certificate,
        mailboxes=values.pop("mailbox"),
        graph_url=graph_url,
        authority_url=authority_url,
        scope=f"{graph_root}/.default",
        cache_dir=cache_dir,
        uid=values.pop("uid", user_uid),
        gid=values.pop("gid", user_gid),
        **values,
    )


def _default_cache_dir(environment: Mapping[str, str]) -> Path:
    # systemd's CacheDirectory= hands the service its own directory.
    if environment.get("CACHE_DIRECTORY"):
        return Path(environment["CACHE_DIRECTORY"].split(":")[0])
    return Path(platformdirs.user_cache_dir("exchange-fuse"))


def _read_secret(secret_file: Path | None, environment: Mapping[str, str]) -> str:
    if secret_file is not None:
        return _secret_from(secret_file, "client_secret_file")
    if environment.get(SECRET_ENVIRONMENT_VARIABLE):
        return environment[SECRET_ENVIRONMENT_VARIABLE].strip()
    credentials = environment.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / SECRET_CREDENTIAL_NAME).exists():
        return _secret_from(Path(credentials) / SECRET_CREDENTIAL_NAME, "systemd credential")
    raise ConfigError(
        f"no client secret: give --client-secret-file FILE, set {SECRET_ENVIRONMENT_VARIABLE}, "
        f"or pass the systemd credential {SECRET_CREDENTIAL_NAME!r}"
    )


def _read_certificate(path: Path, environment: Mapping[str, str]) -> ClientCertificate:
    passphrase = environment.get(PASSPHRASE_ENVIRONMENT_VARIABLE) or None
    credentials = environment.get("CREDENTIALS_DIRECTORY")
    if passphrase is None and credentials:
        stored = Path(credentials) / PASSPHRASE_CREDENTIAL_NAME
        if stored.exists():
            passphrase = _secret_from(stored, "systemd credential")
    try:
        if path.suffix.lower() in (".pfx", ".p12"):
            return ClientCertificate.from_pfx(path, passphrase)
        return ClientCertificate.from_pem_file(path, passphrase)
    except OSError as exc:
        raise ConfigError(f"certificate_file: cannot read {path} ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"certificate_file: {path} is not usable: {exc}") from None


def _secret_from(path: Path, source: str) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: {path} is not a text file") from None
    if not secret:
        raise ConfigError(f"{source}: {path} is empty")
    return secret

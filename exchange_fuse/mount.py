"""Start-up and shutdown of a mount: build the layers, mount, serve, unmount.

Everything that can fail because of the user's setup (credentials, consent, access policy,
mailbox, mountpoint, FUSE itself) is checked before the kernel mount exists, and reported as
a ``StartupError`` with one sentence that says what to fix.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from . import auth, graph
from .cache import CacheInUseError, ContentCache
from .config import Config
from .content import ContentService
from .diagnosis import explain, token_roles
from .fs import FsOptions, KernelInvalidator, MailFilesystem
from .mail import MailboxAddress
from .removal import EmptyMessagePolicy, Remover
from .sync import Poller
from .systemd import Notifier
from .tree import Namespace, NamespaceOptions

log = logging.getLogger(__name__)

# How often systemd's STATUS= line is refreshed (the watchdog may ask for more often).
STATUS_INTERVAL = 15.0
# The kernel's read-ahead for the mount: FUSE carries at most 1 MiB per read request.
READ_AHEAD_KB = 1024


class StartupError(Exception):
    """The mount cannot start; the message tells the user what to fix."""


def check_mountpoint(mountpoint: Path) -> None:
    """Refuse a missing, busy or unusable mountpoint; clear a dead mount left by a crash."""
    try:
        # statfs always reaches a FUSE daemon, where stat may be answered from the kernel's
        # cache: a mount whose daemon died answers ENOTCONN ("Transport endpoint is not
        # connected").
        os.statvfs(mountpoint)
    except FileNotFoundError:
        raise StartupError(f"mountpoint {mountpoint} does not exist: create it first") from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise StartupError(f"mountpoint {mountpoint}: {exc.strerror}") from None
        log.warning("clearing the dead mount left at %s", mountpoint)
        unmount(mountpoint)
    if not mountpoint.is_dir():
        raise StartupError(f"mountpoint {mountpoint} is not a directory")
    if is_mounted(mountpoint):
        raise StartupError(
            f"{mountpoint} is already mounted: unmount it first (fusermount3 -u {mountpoint})"
        )
    if not os.path.exists("/dev/fuse"):
        raise StartupError("FUSE is not available: /dev/fuse is missing (modprobe fuse)")
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        raise StartupError("fusermount3 is not installed: install the fuse3 package")


def is_mounted(mountpoint: Path) -> bool:
    """Whether something is mounted exactly at mountpoint (alive or dead)."""
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
            for line in mounts:
                field = line.split()[4]
                # mountinfo escapes spaces and other odd characters as octal.
                path = field.encode().decode("unicode_escape")
                if path == target:
                    return True
    except OSError:
        return False
    return False


def unmount(mountpoint: Path) -> None:
    """Lazily unmount mountpoint, as root or through fusermount3."""
    command = ["fusermount3", "-u", "-z", str(mountpoint)]
    if os.geteuid() == 0 and shutil.which("umount"):
        command = ["umount", "-l", str(mountpoint)]
    subprocess.run(command, check=False, capture_output=True)


async def serve(config: Config, *, on_ready: Callable[[], None] | None = None) -> None:
    """Mount, serve until SIGINT/SIGTERM or an outside unmount, then unmount cleanly."""
    # Local problems first: they need no network to find.
    check_mountpoint(config.mountpoint)
    cache = _open_cache(config)
    try:
        tokens = _token_provider(config)
        async with _graph_client(config, tokens) as client:
            namespace = await _load_namespace(config, client, tokens)
            policy = _empty_message_policy(config, namespace)
            content = ContentService(client, cache, namespace)
            filesystem = MailFilesystem(
                namespace,
                content,
                Remover(client, namespace, content, policy),
                FsOptions(
                    uid=config.uid,
                    gid=config.gid,
                    umask=config.umask,
                    read_only=config.read_only,
                    entry_timeout=config.poll_interval,
                    attr_timeout=config.poll_interval,
                    operation_timeout=config.timeout,
                    xattrs=config.xattrs,
                ),
            )
            poller = Poller(client, namespace, KernelInvalidator(), config.poll_interval)
            await _serve_filesystem(config, filesystem, content, poller, on_ready)
    finally:
        cache.close()


def _open_cache(config: Config) -> ContentCache:
    try:
        return ContentCache(_cache_directory(config), config.cache_max_size)
    except CacheInUseError:
        raise StartupError(
            f"the cache directory {config.cache_dir} is in use by another mount"
        ) from None
    except OSError as exc:
        raise StartupError(
            f"cache_dir: cannot use {config.cache_dir} ({exc.strerror}); choose a writable "
            "directory"
        ) from None


def _token_provider(config: Config) -> auth.TokenProvider:
    credential: auth.ClientSecret | auth.ClientCertificate
    if config.certificate is not None:
        credential = config.certificate
    else:
        assert config.client_secret is not None
        credential = auth.ClientSecret(config.client_secret)
    return auth.TokenProvider(
        authority_url=config.authority_url,
        tenant_id=config.tenant,
        client_id=config.client_id,
        credential=credential,
        scope=config.scope,
        ca_bundle=str(config.ca_bundle) if config.ca_bundle else None,
        proxy=config.proxy,
        timeout=config.request_timeout,
    )


def _graph_client(config: Config, tokens: auth.TokenProvider) -> graph.GraphClient:
    return graph.GraphClient(
        config.graph_url,
        tokens,
        ca_bundle=str(config.ca_bundle) if config.ca_bundle else None,
        proxy=config.proxy,
        retry_attempts=config.retry_attempts,
        retry_timeout=config.retry_time,
        request_timeout=config.request_timeout,
        backoff_initial=config.retry_backoff,
    )


async def _load_namespace(
    config: Config, client: graph.GraphClient, tokens: auth.TokenProvider
) -> Namespace:
    """Sign in and load every mailbox's folder tree, explaining what stops it."""
    if config.name_template and "message_id" in config.name_template:
        client.list_internet_message_ids()
    mailboxes = [MailboxAddress(address) for address in config.mailboxes]
    namespace = Namespace(
        client,
        mailboxes,
        NamespaceOptions(
            show_inline=config.inline,
            include_hidden_folders=config.hidden_folders,
            include=config.include,
            exclude=config.exclude,
            exclude_folders=config.exclude_folder,
            name_template=config.name_template,
            linger=config.poll_interval,
        ),
    )
    try:
        token = await tokens.token()
    except auth.AuthError as exc:
        raise StartupError(explain(exc)) from None
    roles = token_roles(token)
    if roles and "Mail.ReadWrite" not in roles and not config.read_only:
        log.warning(
            "the app holds no Mail.ReadWrite permission, so rm will fail: grant it, or mount "
            "with read_only"
        )
    for mailbox in mailboxes:
        try:
            await namespace.load_mailbox(mailbox)
        except (graph.GraphError, auth.AuthError) as exc:
            raise StartupError(explain(exc, mailbox)) from None
    return namespace


async def _serve_filesystem(
    config: Config,
    filesystem: MailFilesystem,
    content: ContentService,
    poller: Poller,
    on_ready: Callable[[], None] | None,
) -> None:
    options = set(pyfuse3.default_options)
    options |= {f"fsname=exchange-fuse:{config.mailboxes[0]}", "subtype=exchange-fuse"}
    if config.read_only:
        options.add("ro")
    if config.allow_other:
        options.add("allow_other")
    try:
        pyfuse3.init(filesystem, str(config.mountpoint), options)
    except RuntimeError as exc:
        raise StartupError(f"cannot mount at {config.mountpoint}: {exc}") from None
    log.info("mounted %s at %s", ", ".join(config.mailboxes), config.mountpoint)

    notifier = Notifier()
    unmounted = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(content.run)
            nursery.start_soon(_handle_signals, poller, notifier)
            nursery.start_soon(poller.run)
            nursery.start_soon(_report_health, config.mountpoint, filesystem, notifier, on_ready)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
        unmounted = True
    finally:
        notifier.stopping()
        # Lazy unmount: a process still inside the mount does not keep it alive.
        pyfuse3.close(unmount=True)
        log.info("unmounted %s%s", config.mountpoint, "" if unmounted else " after an error")
        notifier.close()


def status_line(filesystem: MailFilesystem) -> str:
    """What the mount is doing, in one line for systemctl status."""
    directories, files = filesystem.namespace.counts()
    cache = filesystem.content.cache
    stats = filesystem.content.graph.stats
    return (
        f"{directories} folders, {files} files listed; cache {_mib(cache.used_bytes)} of "
        f"{_mib(cache.max_bytes)}; {stats.requests} Graph requests, {stats.throttled} throttled"
    )


def _mib(size: int) -> str:
    return f"{size / 1024**2:.0f} MiB"


async def _report_health(
    mountpoint: Path,
    filesystem: MailFilesystem,
    notifier: Notifier,
    on_ready: Callable[[], None] | None,
) -> None:
    # A stat through the kernel proves the mount answers before anyone is told it is ready.
    status = await trio.to_thread.run_sync(os.stat, mountpoint)
    _widen_read_ahead(status.st_dev)
    notifier.ready(status_line(filesystem))
    if on_ready is not None:
        on_ready()

    interval = min(notifier.watchdog_interval or STATUS_INTERVAL, STATUS_INTERVAL)
    while True:
        await trio.sleep(interval)
        # The watchdog is fed only when a request makes it through the kernel and back.
        with trio.move_on_after(interval) as probe:
            await trio.to_thread.run_sync(os.statvfs, mountpoint, abandon_on_cancel=True)
        if probe.cancelled_caught:
            log.warning("the mount did not answer a health check within %.0f s", interval)
            continue
        if notifier.watchdog_interval is not None:
            notifier.watchdog()
        notifier.status(status_line(filesystem))


def _widen_read_ahead(device: int) -> None:
    """Let the kernel read ahead 1 MiB at a time, the largest request FUSE carries.

    The default of 128 KiB makes a cached 200 MB attachment cost 800 round trips through
    the daemon instead of 200. Only root may change it; others keep the default.
    """
    setting = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    try:
        setting.write_text(str(READ_AHEAD_KB))
    except OSError as exc:
        log.debug("read-ahead stays at the kernel's default: %s", exc)


async def _handle_signals(poller: Poller, notifier: Notifier) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("received SIGHUP, refreshing folders and listings now")
                poller.refresh_now()
                continue
            log.info("received %s, unmounting", signal.Signals(signum).name)
            notifier.stopping()
            pyfuse3.terminate()


def _empty_message_policy(config: Config, namespace: Namespace) -> EmptyMessagePolicy:
    policy = EmptyMessagePolicy.parse(config.on_empty_message)
    if policy.action != "move":
        return policy
    assert policy.destination is not None
    destinations = {}
    for address in config.mailboxes:
        mailbox = MailboxAddress(address)
        folder = namespace.folder_by_path(mailbox, policy.destination)
        if folder is None or folder.folder is None:
            raise StartupError(
                f"on_empty_message: mailbox {address} has no folder {policy.destination!r} "
                "to move emptied messages to"
            )
        destinations[mailbox] = folder.folder.id
    return EmptyMessagePolicy("move", policy.destination, destinations)


def _cache_directory(config: Config) -> Path:
    # One subdirectory per mountpoint, so two mounts never share partial downloads: a
    # readable part for people, a digest so that no two paths share it, short enough for any
    # file system.
    path = str(config.mountpoint.resolve())
    readable = path.strip("/").replace("/", "_")[-60:] or "root"
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return config.cache_dir / f"{readable}-{digest}"

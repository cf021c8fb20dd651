"""``exchange-mount check``: try the configuration end to end and say what is wrong.

It signs in, reads the permissions the token carries, lists each mailbox's folders and
downloads one attachment, printing one line per step. Every failure it knows gets a
sentence that names the fix. The exit status is 0 only when every step passed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import auth, graph
from .config import Config
from .diagnosis import explain, explain_policy_denial, token_roles
from .mail import AttachmentId, AttachmentKind, FolderRecord, MailboxAddress, MessageId

log = logging.getLogger(__name__)

MAIL_ROLES = ("Mail.ReadWrite", "Mail.Read", "Mail.ReadBasic.All")
# How many folders to look through for an attachment to download before giving up.
FOLDERS_TO_SEARCH = 25


@dataclass
class Report:
    lines: list[tuple[bool, str]] = field(default_factory=list)
    write: Callable[[str], None] = print

    def passed(self, text: str) -> None:
        self.lines.append((True, text))
        self.write(f"ok    {text}")

    def failed(self, text: str) -> None:
        self.lines.append((False, text))
        self.write(f"FAIL  {text}")

    def note(self, text: str) -> None:
        self.write(f"      {text}")

    @property
    def all_passed(self) -> bool:
        return all(passed for passed, _ in self.lines)


async def run_check(config: Config, report: Report) -> bool:
    credential: auth.ClientSecret | auth.ClientCertificate
    if config.certificate is not None:
        credential = config.certificate
        kind = "certificate"
    else:
        assert config.client_secret is not None
        credential = auth.ClientSecret(config.client_secret)
        kind = "client secret"
    ca_bundle = str(config.ca_bundle) if config.ca_bundle else None
    tokens = auth.TokenProvider(
        authority_url=config.authority_url,
        tenant_id=config.tenant,
        client_id=config.client_id,
        credential=credential,
        scope=config.scope,
        ca_bundle=ca_bundle,
        proxy=config.proxy,
    )

    if config.mountpoint != Path() and not config.mountpoint.is_dir():
        report.failed(f"mountpoint {config.mountpoint} does not exist: create it first")

    try:
        token = await tokens.token()
    except auth.AuthError as exc:
        report.failed(explain(exc))
        return False
    report.passed(f"signed in to {config.authority_url} as {config.client_id} ({kind})")

    roles = token_roles(token)
    if roles is None:
        report.note("the token's permissions cannot be read; checking the mailboxes instead")
    elif any(role in MAIL_ROLES for role in roles):
        granted = ", ".join(role for role in roles if role.startswith("Mail."))
        report.passed(f"application permissions: {granted}")
        if "Mail.ReadWrite" not in roles and not config.read_only:
            report.failed(
                "rm needs the Mail.ReadWrite application permission: grant it with admin "
                "consent, or mount with read_only"
            )
    else:
        report.failed(
            "the token carries no Mail application permission: add Mail.ReadWrite as an "
            "application permission (a delegated one does not count) and grant admin consent"
        )
        return False

    destination = None
    if config.on_empty_message.startswith("move:"):
        destination = config.on_empty_message.removeprefix("move:").strip("/")
    async with graph.GraphClient(
        config.graph_url, tokens, ca_bundle=ca_bundle, proxy=config.proxy
    ) as client:
        for address in config.mailboxes:
            await _check_mailbox(
                client,
                MailboxAddress(address),
                report,
                roles_known=roles is not None,
                destination=destination,
            )
    return report.all_passed


async def _check_mailbox(
    client: graph.GraphClient,
    mailbox: MailboxAddress,
    report: Report,
    *,
    roles_known: bool,
    destination: str | None,
) -> None:
    try:
        await client.get_mailbox_root(mailbox)
        folders = await client.list_folder_tree(mailbox)
    except graph.AccessDeniedError as exc:
        # The token holds a Mail permission (checked before), so a policy is in the way.
        report.failed(explain_policy_denial(mailbox) if roles_known else explain(exc, mailbox))
        return
    except graph.GraphError as exc:
        report.failed(explain(exc, mailbox))
        return
    report.passed(f"{mailbox}: {len(folders)} folders")
    if destination is not None:
        if destination in _folder_paths(folders):
            report.passed(f"{mailbox}: emptied messages will be moved to {destination!r}")
        else:
            report.failed(
                f"on_empty_message: mailbox {mailbox} has no folder {destination!r}: create it "
                "or choose another"
            )

    try:
        found = await _first_attachment(client, mailbox, folders)
    except graph.GraphError as exc:
        report.failed(explain(exc, mailbox))
        return
    if found is None:
        report.note(f"{mailbox}: no attachment found to try a download with")
        return
    folder, message_id, attachment_id, name = found
    received = 0
    try:
        async with client.download(mailbox, message_id, attachment_id) as download:
            async for chunk in download.chunks():
                received += len(chunk)
    except graph.GraphError as exc:
        report.failed(explain(exc, mailbox))
        return
    report.passed(f"{mailbox}: downloaded {name!r} from {folder} ({received} bytes)")


async def _first_attachment(
    client: graph.GraphClient, mailbox: MailboxAddress, folders: list[FolderRecord]
) -> tuple[str, MessageId, AttachmentId, str] | None:
    # Inbox-like folders first: they are the likeliest to hold attachments.
    ordered = sorted(folders, key=lambda folder: -folder.total_item_count)
    for folder in ordered[:FOLDERS_TO_SEARCH]:
        if folder.is_search_folder or not folder.total_item_count:
            continue
        for message in await client.list_messages(mailbox, folder.id):
            for attachment in message.attachments:
                if attachment.kind is not AttachmentKind.REFERENCE:
                    name = attachment.name or "(no name)"
                    return folder.display_name, message.id, attachment.id, name
    return None


def _folder_paths(folders: list[FolderRecord]) -> set[str]:
    """Every folder's path of display names, such as "Inbox/Processed"."""
    by_id = {folder.id: folder for folder in folders}

    def path(folder: FolderRecord) -> str:
        parent = by_id.get(folder.parent_id) if folder.parent_id else None
        return f"{path(parent)}/{folder.display_name}" if parent else folder.display_name

    return {path(folder) for folder in folders}

"""``rm`` of an attachment file: delete exactly that attachment, then perhaps its message.

The attachment is deleted by its message and attachment ids, never by name. Its message goes
only when a fresh listing of the message's attachments, taken after the delete, shows none
that the mount would list; a message that gained an attachment meanwhile is kept. What
happens to an emptied message is configurable: Graph's DELETE (recoverable from the
mailbox's Recoverable Items), a move to a named folder, or nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import graph
from .content import ContentService
from .mail import FolderId, MailboxAddress
from .tree import FileNode, Namespace

log = logging.getLogger(__name__)


class RemovalError(Exception):
    """The attachment was removed but its message could not be disposed of as configured."""


@dataclass(frozen=True, slots=True)
class EmptyMessagePolicy:
    """What to do with a message whose last listed attachment was removed."""

    action: str  # "delete", "keep" or "move"
    destination: str | None = None  # folder path for "move", e.g. "Processed" or "Inbox/Done"
    # The destination folder's id in each mailbox, resolved when the mount starts.
    destinations: Mapping[MailboxAddress, FolderId] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> EmptyMessagePolicy:
        if text.startswith("move:"):
            return cls("move", text.removeprefix("move:").strip("/"))
        return cls(text)


class Remover:
    def __init__(
        self,
        client: graph.GraphClient,
        namespace: Namespace,
        content: ContentService,
        policy: EmptyMessagePolicy,
    ) -> None:
        self._graph = client
        self._namespace = namespace
        self._content = content
        self._policy = policy

    async def remove(self, file: FileNode) -> None:
        mailbox, message = file.mailbox, file.message
        try:
            await self._graph.delete_attachment(mailbox, message.id, file.attachment.id)
            log.info("deleted attachment %s", self._namespace.path(file))
        except graph.NotFoundError:
            # Already gone on the server: what the user asked for holds.
            log.info("attachment %s was already gone", self._namespace.path(file))
        self._namespace.remove_file(file)
        self._content.forget(file)

        # The attachment is gone, so rm has done what was asked; a failure from here on
        # leaves the message in place (never deleting more than asked) and is only logged.
        try:
            remaining = await self._graph.list_attachments(mailbox, message.id)
            if not any(self._namespace.shows(attachment) for attachment in remaining):
                await self._dispose_of_message(file)
        except graph.NotFoundError:
            return  # the message itself is gone
        except graph.GraphError as exc:
            log.warning("message of %s left in place: %s", file.name, exc)

    async def _dispose_of_message(self, file: FileNode) -> None:
        mailbox, message = file.mailbox, file.message
        match self._policy.action:
            case "keep":
                log.info("message of %s has no attachments left; kept", file.name)
            case "move":
                destination = self._destination(file)
                await self._graph.move_message(mailbox, message.id, destination)
                log.info("message of %s moved to %s", file.name, self._policy.destination)
            case _:
                try:
                    await self._graph.delete_message(mailbox, message.id)
                except graph.NotFoundError:
                    return
                log.info("message of %s had no attachments left; deleted", file.name)

    def _destination(self, file: FileNode) -> FolderId:
        folder_id = self._policy.destinations.get(file.mailbox)
        if folder_id is None:
            raise RemovalError(f"no folder {self._policy.destination!r} in {file.mailbox}")
        return folder_id

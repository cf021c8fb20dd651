"""Graph-style opaque ids for folders, messages and attachments.

Exchange ids are base64 text. The emulator packs what it needs to find an object (kind,
mailbox, serials and, for messages, the move generation) and encodes it the same way. With
the id quirk on, every id contains ``/``, ``+`` and ``=`` (standard base64 alphabet, padded),
so a client that does not percent-encode ids in URLs fails here as it would against Graph.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

# "AAMk" is how Exchange store ids begin; the next three bytes encode as "+/+/".
_PREFIX = b"\x00\x03\x24\xfb\xff\xbf"
IMMUTABLE = 0xFFFF  # generation slot value of an immutable id

_FOLDER = ord("F")
_MESSAGE = ord("M")
_ATTACHMENT = ord("A")


@dataclass(frozen=True, slots=True)
class DecodedId:
    """What an id names: ``generation`` is ``IMMUTABLE`` for immutable ids."""

    kind: str
    mailbox: int
    serial: int
    generation: int = IMMUTABLE
    attachment: int = 0


class IdCodec:
    """Encodes and decodes ids; ``special`` picks the alphabet with ``/``, ``+`` and ``=``."""

    def __init__(self, *, special: bool = True) -> None:
        self.special = special

    def folder(self, mailbox: int, serial: int) -> str:
        return self._encode(struct.pack(">BHI", _FOLDER, mailbox, serial))

    def message(self, mailbox: int, serial: int, generation: int) -> str:
        return self._encode(struct.pack(">BHIH", _MESSAGE, mailbox, serial, generation))

    def attachment(self, mailbox: int, serial: int, generation: int, attachment: int) -> str:
        packed = struct.pack(">BHIHI", _ATTACHMENT, mailbox, serial, generation, attachment)
        return self._encode(packed)

    def decode(self, text: str) -> DecodedId | None:
        """The object an id names, or None when the text is not an id of ours."""
        raw = self._decode_bytes(text)
        if raw is None or not raw.startswith(_PREFIX):
            return None
        body = raw[len(_PREFIX) :]
        try:
            if body[0] == _FOLDER:
                _, mailbox, serial = struct.unpack(">BHI", body[:7])
                return DecodedId("folder", mailbox, serial)
            if body[0] == _MESSAGE:
                _, mailbox, serial, generation = struct.unpack(">BHIH", body[:9])
                return DecodedId("message", mailbox, serial, generation)
            if body[0] == _ATTACHMENT:
                _, mailbox, serial, generation, attachment = struct.unpack(">BHIHI", body[:13])
                return DecodedId("attachment", mailbox, serial, generation, attachment)
        except (struct.error, IndexError):
            return None
        return None

    def _encode(self, body: bytes) -> str:
        raw = _PREFIX + body
        if len(raw) % 3 == 0:
            # Keep the padding quirk: a length that is not a multiple of 3 ends in "=".
            raw += b"\x00"
        if self.special:
            return base64.b64encode(raw).decode("ascii")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @staticmethod
    def _decode_bytes(text: str) -> bytes | None:
        try:
            if "-" in text or "_" in text or "=" not in text:
                padded = text + "=" * (-len(text) % 4)
                return base64.urlsafe_b64decode(padded.encode("ascii"))
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None

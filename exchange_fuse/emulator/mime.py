"""MIME to mailbox items, the way Exchange stores an incoming message.

Exchange keeps one body (HTML preferred) and turns every other part into an attachment:

- names come from ``Content-Disposition: filename`` (RFC 2231, continuations joined as raw
  octets before the charset is applied), else ``Content-Type: name``; encoded-words (RFC 2047)
  are decoded even inside quoted parameters, and folded headers are unfolded first;
- charset labels are read the Windows way (``shift_jis`` as CP932, ``iso-8859-1`` as
  windows-1252, ...), and undecodable bytes become U+FFFD rather than an error;
- a part without a usable name gets a generated ``ATT00001.bin``-style name;
- a part with a ``Content-ID`` that is not marked ``attachment`` is inline;
- ``message/rfc822`` parts become item attachments (mail), served as MIME.

The reverse direction is here too: MIME for a message built from JSON, iCalendar for an
event and vCard for a contact, which is what ``$value`` of an item attachment returns.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.policy
import email.utils
import logging
import mimetypes
import quopri
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import Message as MimePart

from exchange_fuse.emulator.content import BytesContent, Content, LazyContent
from exchange_fuse.emulator.store import Attachment, Item, Message

log = logging.getLogger(__name__)

# Attached mail: these become item attachments; other message/* parts (delivery reports and
# the like) become files holding their text.
MAIL_TYPES = frozenset({"message/rfc822", "message/global", "message/news"})

# Parts larger than this are decoded again from the source when served, not kept in memory.
KEEP_IN_MEMORY = 256 * 1024

# How Windows (and so Exchange) reads charset labels that mail software uses loosely.
_CHARSET_ALIASES = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "big5": "cp950",
    "iso-2022-jp": "iso2022_jp_ext",
    "unicode-1-1-utf-7": "utf-7",
}

_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "undefined", "raw-unicode-escape", "unicode-escape"}
)
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def codec_for(label: str | None) -> str:
    """The Python codec for a MIME charset label, as Windows would read it."""
    if not label:
        return "cp1252"
    name = label.strip().strip('"').lower()
    name = name.split("*", 1)[0]  # RFC 2231 language suffix on an encoded-word charset
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except LookupError:
        return "utf-8"
    # Python also knows codecs that are no character sets (hex, zlib, rot13, punycode...).
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return "utf-8"
    return name


def decode_bytes(data: bytes, label: str | None) -> str:
    return data.decode(codec_for(label), errors="replace")


def header_text(raw: bytes) -> str:
    """Bytes of a header as text: UTF-8 when valid, else windows-1252."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Mostly valid UTF-8 with a broken sequence (often a name cut short) is still UTF-8.
    text = raw.decode("utf-8", errors="replace")
    broken = text.count("\ufffd")
    if broken <= sum(1 for char in text if ord(char) > 127) - broken:
        return text
    return raw.decode("cp1252", errors="replace")


def unfold(value: str) -> str:
    return _FOLD.sub("", value)


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words in ``value``.

    Whitespace between two adjacent encoded-words is dropped, and adjacent words in the same
    charset are joined as bytes before decoding, so a character split across words survives.
    """
    pieces: list[tuple[str | None, bytes | str]] = []
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        if between and not (between.isspace() and pieces and pieces[-1][0] is not None):
            pieces.append((None, between))
        charset, encoding, text = match.groups()
        try:
            if encoding in "bB":
                data = base64.b64decode(text + "=" * (-len(text) % 4))
            else:
                data = quopri.decodestring(text.replace("_", " ").encode("latin-1"), header=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            pieces.append((None, match.group(0)))
        else:
            if pieces and pieces[-1][0] == charset.lower():
                previous = pieces[-1][1]
                assert isinstance(previous, bytes)
                pieces[-1] = (charset.lower(), previous + data)
            else:
                pieces.append((charset.lower(), data))
        position = match.end()
    if not pieces:
        return value
    tail = value[position:]
    if tail:
        pieces.append((None, tail))
    out = []
    for charset, piece in pieces:
        out.append(decode_bytes(piece, charset) if isinstance(piece, bytes) else piece)
    return "".join(out)


def _raw_header(part: MimePart, name: str) -> str | None:
    """The first ``name`` header as text, unfolded, with 8-bit bytes read as UTF-8."""
    for key, value in part.raw_items():
        if key.lower() == name:
            if not isinstance(value, str):
                value = str(value)
            raw = value.encode("ascii", "surrogateescape")
            return unfold(header_text(raw))
    return None


def header(part: MimePart, name: str) -> str | None:
    raw = _raw_header(part, name)
    return None if raw is None else decode_words(raw).strip()


def _as_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _param_text(value: str | tuple[str | None, str | None, str]) -> str:
    if isinstance(value, tuple):
        charset, _language, text = value
        raw = _as_bytes(text)
        if b"%" in raw:
            # Segments that were not marked as encoded keep their escapes; finish the job.
            raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), raw)
        return decode_words(decode_bytes(raw, charset or "utf-8"))
    return decode_words(value)


def _split_params(value: str) -> list[tuple[str, str]]:
    """``type; a=1; b="x;y"`` as [("", "type"), ("a", "1"), ("b", '"x;y"')]."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    params = [("", pieces[0].strip())]
    for piece in pieces[1:]:
        key, sep, text = piece.partition("=")
        if sep:
            params.append((key.strip().lower(), text.strip()))
    return params


def _param(part: MimePart, header_name: str, param: str) -> str | None:
    """A parameter, RFC 2231 forms preferred over the plain one."""
    value = _raw_header(part, header_name)
    if not value:
        return None
    try:
        params = email.utils.decode_params(_split_params(value))
    except (ValueError, IndexError, LookupError):
        return None
    plain: str | None = None
    for key, text in params[1:]:
        if key != param:
            continue
        if isinstance(text, tuple):
            charset, language, quoted = text
            return _param_text((charset, language, email.utils.unquote(quoted))).strip()
        if plain is None:
            plain = _param_text(email.utils.unquote(text)).strip()
    return plain


def attachment_name(part: MimePart) -> str | None:
    for header_name, param in (("content-disposition", "filename"), ("content-type", "name")):
        name = _param(part, header_name, param)
        if name:
            return name
    return None


def _disposition(part: MimePart) -> str:
    value = _raw_header(part, "content-disposition")
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()


def _content_id(part: MimePart) -> str | None:
    value = _raw_header(part, "content-id")
    if not value:
        return None
    return value.strip().strip("<>").strip() or None


def parse_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def received_time(part: MimePart, fallback: float) -> float:
    """When the message arrived: the newest ``Received`` stamp, else ``Date``."""
    received = _raw_header(part, "received")
    if received and ";" in received:
        stamp = parse_date(received.rsplit(";", 1)[1].strip())
        if stamp is not None:
            return stamp
    date = parse_date(_raw_header(part, "date"))
    return date if date is not None else fallback


def _address(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    name, address = email.utils.parseaddr(value)
    if not name and not address:
        return None
    return (decode_words(name), address)


def _addresses(value: str | None) -> list[tuple[str, str]]:
    if not value:
        return []
    found = []
    for name, address in email.utils.getaddresses([value]):
        if name or address:
            found.append((decode_words(name), address))
    return found


def _payload(part: MimePart) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, LookupError, AssertionError):
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    if isinstance(raw, list):
        return message_body(part)
    return b""


def message_body(part: MimePart) -> bytes:
    """The body of a ``message/*`` part as it stands in the MIME (its header blocks)."""
    try:
        whole = part.as_bytes(policy=email.policy.compat32)
    except (LookupError, ValueError, TypeError, UnicodeError):
        return b""
    for separator in (b"\r\n\r\n", b"\n\n"):
        _head, found, body = whole.partition(separator)
        if found:
            return body
    return b""


def _body_text(part: MimePart) -> str:
    return decode_bytes(_payload(part), part.get_content_charset())


class _Walk:
    """One pass over a MIME tree: the body found and the attachments in order."""

    def __init__(self, source: Callable[[], MimePart] | None) -> None:
        self.body: str | None = None
        self.body_type = "text"
        self.attachments: list[Attachment] = []
        self.unnamed = 0
        self.source = source
        self.paths: list[tuple[int, ...]] = []

    def visit(self, part: MimePart, path: tuple[int, ...], body_slot: bool) -> None:
        ctype = part.get_content_type()
        if ctype in MAIL_TYPES:
            self._item(part, attachment_name(part))
            return
        if part.is_multipart() and not ctype.startswith("message/"):
            payload = part.get_payload()
            if not isinstance(payload, list):
                return
            children = [child for child in payload if isinstance(child, MimePart)]
            if ctype == "multipart/alternative":
                self._alternative(children, path, body_slot)
            elif ctype == "multipart/related" and children:
                self.visit(children[0], (*path, 0), body_slot)
                for index, child in enumerate(children[1:], start=1):
                    self.visit(child, (*path, index), False)
            else:
                for index, child in enumerate(children):
                    self.visit(child, (*path, index), body_slot)
            return

        disposition = _disposition(part)
        name = attachment_name(part)
        if (
            body_slot
            and self.body is None
            and ctype in ("text/plain", "text/html")
            and disposition != "attachment"
            and name is None
        ):
            self.body = _body_text(part)
            self.body_type = "html" if ctype == "text/html" else "text"
            return

        self._file(part, path, ctype, name, disposition)

    def _alternative(self, children: list[MimePart], path: tuple[int, ...], body: bool) -> None:
        # Keep the richest alternative as the body; Exchange drops the others.
        chosen = 0
        for index, child in enumerate(children):
            ctype = child.get_content_type()
            if ctype == "text/html" or child.is_multipart():
                chosen = index
        if children:
            self.visit(children[chosen], (*path, chosen), body)

    def _item(self, part: MimePart, name: str | None) -> None:
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], MimePart):
            embedded = inner[0]
            try:
                data = embedded.as_bytes(policy=email.policy.compat32)
            except (LookupError, ValueError, TypeError, UnicodeError):
                data = _payload(part)
        else:
            data = _payload(part)
            embedded = email.message_from_bytes(data, policy=email.policy.compat32)
        subject = header(embedded, "subject")
        fields: dict[str, object] = {
            "subject": subject,
            "receivedDateTime": received_time(embedded, 0.0) or None,
            "from": _address(header(embedded, "from")),
            "internetMessageId": header(embedded, "message-id"),
        }
        item = Item("message", fields, BytesContent(data))
        self.attachments.append(
            Attachment("item", name or subject, None, None, is_inline=False, item=item)
        )

    def _file(
        self, part: MimePart, path: tuple[int, ...], ctype: str, name: str | None, disp: str
    ) -> None:
        data = _payload(part)
        if not name:
            self.unnamed += 1
            extension = ".txt" if ctype == "text/plain" else mimetypes.guess_extension(ctype)
            name = f"ATT{self.unnamed:05d}{extension or '.bin'}"
        content_id = _content_id(part)
        content: Content
        if len(data) > KEEP_IN_MEMORY and self.source is not None:
            content = LazyContent(len(data), _part_loader(self.source, path))
        else:
            content = BytesContent(data)
        self.attachments.append(
            Attachment(
                "file",
                name,
                ctype,
                content,
                is_inline=content_id is not None and disp != "attachment",
                content_id=content_id,
            )
        )


def _part_loader(source: Callable[[], MimePart], path: tuple[int, ...]) -> Callable[[], bytes]:
    def load() -> bytes:
        part = source()
        for index in path:
            children = part.get_payload()
            assert isinstance(children, list)
            child = children[index]
            assert isinstance(child, MimePart)
            part = child
        return _payload(part)

    return load


def parse(data: bytes) -> MimePart:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def message_from_mime(
    data: bytes,
    *,
    fallback_time: float,
    reload: Callable[[], bytes] | None = None,
) -> Message:
    """An Exchange-style message from raw MIME; never raises on malformed input.

    ``reload`` gives the bytes again later; large parts are then not kept in memory.
    """
    try:
        return _convert(data, fallback_time, reload)
    except Exception:
        log.warning("could not convert a MIME message; storing it without attachments")
        return Message(
            None,
            fallback_time,
            body=decode_bytes(data[:4096], "utf-8"),
            mime=BytesContent(data),
        )


def _convert(data: bytes, fallback_time: float, reload: Callable[[], bytes] | None) -> Message:
    root = parse(data)
    source = (lambda: parse(reload())) if reload is not None else None
    walk = _Walk(source)
    walk.visit(root, (), True)
    received = received_time(root, fallback_time)
    sent = parse_date(_raw_header(root, "date"))
    mime: Content = LazyContent(len(data), reload) if reload is not None else BytesContent(data)
    return Message(
        header(root, "subject"),
        received,
        sent=sent,
        sender=_address(header(root, "from")),
        recipients=_addresses(header(root, "to")),
        internet_message_id=header(root, "message-id"),
        body=walk.body or "",
        body_type=walk.body_type,
        attachments=walk.attachments,
        mime=mime,
    )


# -- the reverse: items as MIME, iCalendar and vCard ----------------------------------------


def _format_address(address: tuple[str, str] | None) -> str:
    if address is None:
        return ""
    name, addr = address
    return email.utils.formataddr((name, addr)) if name else addr


def message_to_mime(message: Message) -> bytes:
    """MIME for a message that was not created from MIME (multipart/mixed when attached)."""
    mail = email.message.EmailMessage(policy=email.policy.SMTP)
    if message.sender:
        mail["From"] = _format_address(message.sender)
    if message.recipients:
        mail["To"] = ", ".join(_format_address(r) for r in message.recipients)
    if message.subject:
        mail["Subject"] = message.subject
    mail["Date"] = email.utils.format_datetime(datetime.fromtimestamp(message.sent, UTC))
    if message.internet_message_id:
        mail["Message-ID"] = message.internet_message_id
    subtype = "html" if message.body_type == "html" else "plain"
    mail.set_content(message.body_text(), subtype=subtype)
    for attachment in message.attachments:
        if attachment.kind == "file" and attachment.content is not None:
            maintype, _, subtype = (
                attachment.content_type or "application/octet-stream"
            ).partition("/")
            mail.add_attachment(
                attachment.content.read(),
                maintype=maintype,
                subtype=subtype or "octet-stream",
                filename=attachment.name or None,
            )
        elif attachment.item is not None:
            mail.add_attachment(
                attachment.item.content.read(),
                maintype="application",
                subtype="octet-stream",
                filename=attachment.name or None,
            )
    return mail.as_bytes()


def _ics_text(value: object) -> str:
    text = str(value or "")
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _ics_time(value: object) -> str:
    text = str(value or "2024-01-01T00:00:00")
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def event_to_ics(fields: dict[str, object], uid: str) -> bytes:
    start = fields.get("start")
    end = fields.get("end")
    start_value = start.get("dateTime") if isinstance(start, dict) else start
    end_value = end.get("dateTime") if isinstance(end, dict) else end
    location = fields.get("location")
    place = location.get("displayName") if isinstance(location, dict) else location
    lines = [
        "BEGIN:VCALENDAR",
        "METHOD:PUBLISH",
        "PRODID:exchange-fuse emulator",
        "VERSION:2.0",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        f"SUMMARY:{_ics_text(fields.get('subject'))}",
        f"DTSTART:{_ics_time(start_value)}",
        f"DTEND:{_ics_time(end_value or start_value)}",
        f"LOCATION:{_ics_text(place)}",
        f"DTSTAMP:{_ics_time(start_value)}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def contact_to_vcard(fields: dict[str, object]) -> bytes:
    given = str(fields.get("givenName") or "")
    surname = str(fields.get("surname") or "")
    display = str(fields.get("displayName") or f"{given} {surname}".strip())
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"N:{surname};{given};;;", f"FN:{display}"]
    addresses = fields.get("emailAddresses")
    if isinstance(addresses, list):
        for entry in addresses:
            address = entry.get("address") if isinstance(entry, dict) else entry
            if address:
                lines.append(f"EMAIL;TYPE=INTERNET:{address}")
    phones = fields.get("businessPhones")
    if isinstance(phones, list):
        lines.extend(f"TEL;TYPE=WORK:{phone}" for phone in phones)
    if fields.get("companyName"):
        lines.append(f"ORG:{fields['companyName']}")
    lines.append("END:VCARD")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")

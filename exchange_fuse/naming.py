"""File and folder names: turn mail text into directory entries every tool can copy.

An attachment's name is ``<subject>-<attachment name>`` (or a configured template), then
made safe: characters that Windows, Linux or macOS refuse, and the bidirectional controls
that let a name pose as another type, become ``-``; a trailing ``.`` or space becomes
``-``; a Windows device name gets ``-`` after it; the result fits 240 characters and 255
UTF-8 bytes with the extension kept. RFC 2047 encoded-words that reach us undecoded are
decoded first. ``docs/naming.md`` states the rules for users.

Everything here is a pure function of its arguments, so a name never changes between
polls unless the mail did.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import re
import string
import unicodedata
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from .mail import AttachmentKind

log = logging.getLogger(__name__)

MAX_CHARS = 240
MAX_BYTES = 255  # NAME_MAX of ext4, tmpfs and most other Linux file systems
MAX_EXTENSION = 9  # characters after the dot

# Also lone surrogates: JSON can carry them, and they cannot be written as UTF-8.
_INVALID = dict.fromkeys(
    [
        *map(ord, '<>:"/\\|?*'),
        *range(0x20),
        0x7F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        *range(0xD800, 0xE000),
    ],
    "-",
)
_TRAILING = re.compile(r"[. ]+\Z")
# Windows reads a device name from the text before the first dot, ignoring trailing
# spaces; it takes the superscript digits as digits too.
_DEVICE = re.compile(r"(?:CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|(?:COM|LPT)[1-9¹²³]) *(?=\.|\Z)", re.I)

# A cut must not separate a character from what combines with it. Grapheme clusters are
# approximated without a Unicode segmentation library: combining marks (categories
# Mn, Mc, Me, which include the keycap U+20E3), ZWNJ and ZWJ, variation selectors, emoji
# skin-tone modifiers, emoji tag characters and Hangul medial and final jamo all join the
# character before; a character after a ZWJ joins too; regional indicators pair into flags.
_JOINS_PREVIOUS = re.compile(
    "[\u200c\u200d\ufe00-\ufe0f\u1160-\u11ff\ud7b0-\ud7ff"
    "\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f\U000e0100-\U000e01ef]"
)
_REGIONAL = re.compile("[\U0001f1e6-\U0001f1ff]")
_REGIONAL_RUN = re.compile("[\U0001f1e6-\U0001f1ff]*\\Z")
# No real cluster at a cut is longer; past this, cut between code points (still valid UTF-8).
_MAX_CLUSTER = 32

# RFC 2047 encoded-words, which some senders put inside quoted file names where Exchange
# leaves them undecoded; the space between two adjacent words belongs to neither.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)\s+(?==\?[^?\s]+\?[bBqQ]\?)")
# Mail clients decode these labels with the larger Microsoft or WHATWG code page, which
# has the characters senders actually use (for example U+2164 in CP932).
_CHARSET_SUPERSETS = {
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
}

_ITEM_EXTENSIONS = {"event": ".ics", "contact": ".vcf"}  # anything else is a message
_TYPE_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/json": ".json",
    "application/xml": ".xml",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "text/plain": ".txt",
    "text/csv": ".csv",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/vcard": ".vcf",
    "text/x-vcard": ".vcf",
    "message/rfc822": ".eml",
}
FALLBACK_ATTACHMENT = "attachment"
FALLBACK_FOLDER = "folder"
TEMPLATE_FIELDS = frozenset({"subject", "attachment", "sender", "received", "message_id"})


@dataclass(frozen=True, slots=True)
class EntryName:
    """A safe name before de-duplication: ``stem`` may be cut, ``extension`` never is."""

    stem: str
    extension: str

    def render(self, ordinal: int = 1) -> str:
        """The entry name: the plain name for ordinal 1, ``stem (N).ext`` for N >= 2."""
        if ordinal < 2:
            return self._fit("")
        number = f" ({ordinal})" if self.stem else f"({ordinal})"
        name = self._fit(number)
        if name == self._fit(""):
            # The cut kept a " (N)" that the stem itself contains: one character less
            # keeps the numbered name apart from the plain one.
            name = self._fit(number, spare=1)
        return name

    def _fit(self, number: str, spare: int = 0) -> str:
        tail = number + self.extension
        max_chars = MAX_CHARS - len(tail) - spare
        stem = _cut(self.stem, max_chars, MAX_BYTES - len(tail.encode()) - spare)
        name = _safe_stem(stem, tail) + tail
        if len(name) > MAX_CHARS or len(name.encode()) > MAX_BYTES:
            # Making the cut stem safe added a character (after a device name, or for a
            # trailing dot): cut one more and make it safe again.
            return self._fit(number, spare + 1)
        return name


def attachment_entry_name(
    subject: str | None,
    attachment_name: str | None,
    kind: AttachmentKind,
    item_type: str | None = None,
    content_type: str | None = None,
) -> EntryName:
    """The entry for one attachment: ``<subject>-<attachment name>``, made safe."""
    name = _attachment_text(attachment_name, kind, item_type, content_type)
    extension = _extension(name)
    base = name[: len(name) - len(extension)]
    # A subject that decodes to nothing counts as none: a name never starts with "-".
    subject = _decoded(subject) if subject else subject
    stem = f"{subject.translate(_INVALID)}-{base}" if subject else base
    return _entry(stem, extension)


def folder_entry_name(display_name: str | None) -> EntryName:
    """The entry for a mail folder (or a mailbox): no extension is kept."""
    return _entry((display_name or FALLBACK_FOLDER).translate(_INVALID), "")


def templated_entry_name(
    template: str,
    fields: Mapping[str, str | datetime | None],
    kind: AttachmentKind = AttachmentKind.FILE,
    item_type: str | None = None,
    content_type: str | None = None,
) -> EntryName:
    """The entry for one attachment from a name template such as ``{subject}-{attachment}``.

    Fields: ``subject``, ``attachment`` (the attachment name, with the same fallback and
    kind extension as the default layout), ``sender``, ``received`` (a datetime; a spec
    such as ``{received:%Y-%m-%d}`` formats it) and ``message_id``. A missing field is
    empty. The extension is protected from cutting when the result ends with the
    attachment's; item and reference attachments always end in their kind's extension.
    """
    given = fields.get("attachment")
    name = given if isinstance(given, str) else None
    attachment = _attachment_text(name, kind, item_type, content_type)
    values = {
        field: _decoded(value) if isinstance(value, str) else value
        for field, value in fields.items()
    }
    values["attachment"] = attachment
    text = "".join(
        literal + ("" if field is None else _format_field(values.get(field), spec))
        for literal, field, spec in _parse_template(template)
    ).translate(_INVALID)
    if not text:
        return attachment_entry_name(None, attachment, kind, item_type, content_type)

    if kind is not AttachmentKind.FILE:
        text = _with_extension(text, _kind_extension(kind, item_type, content_type))
    extension = _extension(attachment)
    if not text.endswith(extension):
        extension = ""
    return _entry(text[: len(text) - len(extension)], extension)


def check_template(template: str) -> None:
    """Raise ``ValueError`` with a readable reason if ``template`` cannot name files."""
    sample: dict[str, str | datetime | None] = dict.fromkeys(TEMPLATE_FIELDS, "x")
    sample["received"] = datetime(2000, 1, 2, 3, 4, 5)
    # A format width of millions of characters would be cut anyway, at some memory cost.
    try:
        specs = [spec or "" for _, _, spec, _ in string.Formatter().parse(template)]
    except ValueError as error:
        raise ValueError(f"bad name template {template!r}: {error}") from error
    if any(len(digits) > 3 for spec in specs for digits in re.findall(r"\d+", spec)):
        raise ValueError(f"bad name template {template!r}: a field width over 999")
    try:
        templated_entry_name(template, sample)
    except (TypeError, ValueError, MemoryError, OverflowError) as error:
        raise ValueError(f"bad name template {template!r}: {error}") from error


def reference_shortcut(url: str) -> bytes:
    """The body of the ``.url`` file that stands for a cloud-link attachment."""
    # Percent-encoding spaces, line breaks and non-ASCII keeps the link on one line (a
    # newline would start a new key) and readable by any INI parser.
    safe_url = urllib.parse.quote(url, safe="!#$%&'()*+,-./:;=?@[]_~")
    return f"[InternetShortcut]\r\nURL={safe_url}\r\n".encode("ascii")


def _entry(stem: str, extension: str) -> EntryName:
    extension = _TRAILING.sub(_dashes, extension)
    return EntryName(_safe_stem(stem, extension), extension)


def _safe_stem(stem: str, tail: str) -> str:
    """Fix what only the ends of the whole name can get wrong; ``stem + tail`` is the name."""
    if not tail:
        stem = _TRAILING.sub(_dashes, stem)
    device = _DEVICE.match(stem + tail)
    if device:
        stem = f"{stem[: device.end()]}-{stem[device.end() :]}"
    return stem


def _dashes(match: re.Match[str]) -> str:
    return "-" * len(match.group())


def _cut(stem: str, max_chars: int, max_bytes: int) -> str:
    """The longest prefix of ``stem`` within both limits that ends between clusters."""
    end = min(len(stem), max_chars)
    encoded = stem[:end].encode()
    if len(encoded) > max_bytes:
        end = len(encoded[:max_bytes].decode(errors="ignore"))
    if end == len(stem):
        return stem

    for back in range(min(end, _MAX_CLUSTER)):
        if not _splits_cluster(stem, end - back):
            return stem[: end - back]
    return stem[:end]


def _splits_cluster(text: str, at: int) -> bool:
    """Whether cutting ``text`` before index ``at`` (0 < at < len) splits a cluster."""
    after = text[at]
    if _JOINS_PREVIOUS.match(after) or unicodedata.category(after)[0] == "M":
        return True
    if text[at - 1] == "\u200d":
        return True
    if not _REGIONAL.match(after):
        return False
    # An odd run of regional indicators before the cut means it falls inside a flag.
    run = _REGIONAL_RUN.search(text, max(0, at - 2 * _MAX_CLUSTER), at)
    return run is not None and len(run.group()) % 2 == 1


def _attachment_text(
    name: str | None, kind: AttachmentKind, item_type: str | None, content_type: str | None
) -> str:
    """The attachment's name made safe, with its fallback and the extension its kind needs."""
    if name:
        name = _decoded(name).translate(_INVALID)
    if kind is AttachmentKind.FILE:
        if name:
            return name
        media_type = (content_type or "").partition(";")[0].strip().lower()
        return FALLBACK_ATTACHMENT + _TYPE_EXTENSIONS.get(media_type, ".bin")
    wanted = _kind_extension(kind, item_type, content_type)
    return _with_extension(name or FALLBACK_ATTACHMENT, wanted)


def _kind_extension(kind: AttachmentKind, item_type: str | None, content_type: str | None) -> str:
    if kind is AttachmentKind.REFERENCE:
        return ".url"
    # Graph names item types "message", "event", "contact", or by their OData type.
    item = (item_type or "").rpartition(".")[2].lower()
    if item in _ITEM_EXTENSIONS:
        return _ITEM_EXTENSIONS[item]
    from_type = _TYPE_EXTENSIONS.get((content_type or "").partition(";")[0].strip().lower())
    return from_type if from_type in (".ics", ".vcf") else ".eml"


def _with_extension(name: str, extension: str) -> str:
    return name if name.lower().endswith(extension) else name + extension


def _extension(name: str) -> str:
    """What follows the last dot of ``name``, with the dot, when it is 1 to 9 characters."""
    dot = name.rfind(".")
    if dot < 0 or not 1 <= len(name) - dot - 1 <= MAX_EXTENSION:
        return ""
    return name[dot:]


@lru_cache(maxsize=16)
def _parse_template(template: str) -> tuple[tuple[str, str | None, str], ...]:
    parts = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if field is not None and field not in TEMPLATE_FIELDS:
            known = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(f"unknown field {{{field}}}; known fields: {known}")
        if conversion is not None:
            raise ValueError(f"conversions such as !{conversion} are not supported")
        parts.append((literal, field, spec or ""))
    return tuple(parts)


def _format_field(value: object, spec: str) -> str:
    if value is None:
        return ""
    return format(value, spec)


def _decoded(text: str) -> str:
    """``text`` with any RFC 2047 encoded-words decoded; other text is left exactly as is."""
    if "=?" not in text:
        return text
    return _ENCODED_WORD.sub(_decode_word, _BETWEEN_WORDS.sub("", text))


# Text codecs Python knows that are no MIME character sets.
_NOT_CHARSETS = frozenset(
    {
        "idna",
        "punycode",
        "undefined",
        "raw-unicode-escape",
        "unicode-escape",
        "raw_unicode_escape",
        "unicode_escape",
    }
)


def _decode_word(word: re.Match[str]) -> str:
    charset, encoding, payload = word.groups()
    try:
        info = codecs.lookup(charset.partition("*")[0])  # RFC 2231 adds *language
        if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
            raise LookupError(info.name)
        codec = info.name
        if encoding in "bB":
            raw = base64.b64decode(payload + "=" * (-len(payload) % 4))
        else:
            raw = binascii.a2b_qp(payload.encode("ascii"), header=True)
        # Python also knows "codecs" that are no character sets (hex, zlib, rot13, idna...):
        # whatever they do with these bytes, a name is made of text or left as it came.
        decoded = raw.decode(_CHARSET_SUPERSETS.get(codec, codec), errors="replace")
        if not isinstance(decoded, str):
            raise TypeError(codec)
    except (LookupError, ValueError, TypeError):
        log.debug("left an undecodable encoded-word in a name as it is")
        return word.group()
    return decoded

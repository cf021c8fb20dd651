"""MIME conversion the way Exchange stores incoming mail: names, bodies, inline parts, items."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from exchange_fuse.emulator.mime import decode_words, message_from_mime
from exchange_fuse.emulator.store import Message


def _convert(text: str | bytes) -> Message:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return message_from_mime(data.replace(b"\n", b"\r\n"), fallback_time=0.0)


def _mixed(*parts: str, subject: str = "Test") -> str:
    body = "".join(f"--XX\n{part}\n" for part in parts)
    return (
        f"From: a@example.net\nSubject: {subject}\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="XX"\n\n'
        f"--XX\nContent-Type: text/plain\n\nBody.\n{body}--XX--\n"
    )


def _names(message: Message) -> list[str | None]:
    return [attachment.name for attachment in message.attachments]


def test_rfc2231_segments_are_joined_as_bytes_before_decoding() -> None:
    # "Ⅱ-設計書.xls" in CP932; segment 0 ends inside the two bytes of 計.
    raw = "Ⅱ-設計書.xls".encode("cp932")
    cut = raw.index("計".encode("cp932")) + 1
    first = "".join(f"%{b:02X}" for b in raw[:cut])
    second = "".join(f"%{b:02X}" for b in raw[cut:])
    message = _convert(
        _mixed(
            'Content-Type: application/vnd.ms-excel; name="lossy.xls"\n'
            "Content-Disposition: attachment;\n"
            f" filename*0*=shift_jis''{first};\n filename*1*={second}\n\nAAAA"
        )
    )
    assert _names(message) == ["Ⅱ-設計書.xls"]


def test_extended_filename_wins_over_a_lossy_plain_name() -> None:
    encoded = "".join(f"%{b:02X}" for b in "отчёт.txt".encode("koi8-r"))
    message = _convert(
        _mixed(
            'Content-Type: text/plain; name="?????.txt"\n'
            f"Content-Disposition: attachment; filename*=koi8-r''{encoded}\n\nx"
        )
    )
    assert _names(message) == ["отчёт.txt"]


def test_encoded_words_inside_quoted_parameters_and_across_folds() -> None:
    first = base64.b64encode("Überweisung ".encode()).decode()
    second = base64.b64encode("März 2024.pdf".encode()).decode()
    message = _convert(
        _mixed(
            "Content-Type: application/pdf\n"
            f'Content-Disposition: attachment; filename="=?utf-8?B?{first}?=\n'
            f' =?utf-8?B?{second}?="\n\nJVBERg=='
        )
    )
    assert _names(message) == ["Überweisung März 2024.pdf"]


def test_name_only_in_content_type() -> None:
    message = _convert(
        _mixed(
            'Content-Type: application/octet-stream; name="statement.pdf"\n'
            "Content-Transfer-Encoding: base64\nContent-Disposition: attachment\n\nJVBERi0x"
        )
    )
    assert _names(message) == ["statement.pdf"]
    assert message.attachments[0].content is not None
    assert message.attachments[0].content.read() == b"%PDF-1"


def test_folded_names_are_unfolded() -> None:
    message = _convert(
        _mixed(
            "Content-Type: application/pdf\nContent-Disposition: attachment;\n"
            '   filename="Quarterly maintenance report for the data centre and\n'
            ' network (2024).pdf"\n\nx'
        )
    )
    assert _names(message) == [
        "Quarterly maintenance report for the data centre and network (2024).pdf"
    ]


def test_raw_utf8_names_and_a_cut_sequence() -> None:
    # A raw UTF-8 name, and one cut in the middle of its last character.
    cut = "Ärger über Öl.txt".encode()[:-5] + "é".encode()[:1]
    mime = _mixed(
        'Content-Type: text/plain; name="Größe.txt"\nContent-Disposition: attachment\n\nx',
        'Content-Type: text/plain\nContent-Disposition: attachment; filename="CUT"\n\ny',
    ).encode()
    message = _convert(mime.replace(b"CUT", cut))
    assert _names(message)[0] == "Größe.txt"
    second = _names(message)[1]
    assert second is not None and second.startswith("Ärger über")


def test_unnamed_parts_get_exchange_style_names() -> None:
    message = _convert(
        _mixed(
            "Content-Type: application/octet-stream\n\nAAAA",
            "Content-Type: text/plain\n\nA second text part.",
        )
    )
    assert _names(message) == ["ATT00001.bin", "ATT00002.txt"]
    assert message.body_text().strip() == "Body."


def test_inline_image_in_related_html_and_alternative_choice() -> None:
    logo = base64.b64encode(b"\x89PNG fake").decode()
    mime = (
        "From: a@example.net\nSubject: Logo only\nMIME-Version: 1.0\n"
        'Content-Type: multipart/related; boundary="R"\n\n'
        '--R\nContent-Type: multipart/alternative; boundary="A"\n\n'
        "--A\nContent-Type: text/plain\n\nplain\n"
        '--A\nContent-Type: text/html\n\n<img src="cid:logo1">\n--A--\n'
        "--R\nContent-Type: image/png; name=logo.png\nContent-ID: <logo1>\n"
        f"Content-Transfer-Encoding: base64\n\n{logo}\n--R--\n"
    )
    message = _convert(mime)
    assert message.body_type == "html"
    assert "cid:logo1" in message.body_text()
    assert [(a.name, a.is_inline, a.content_id) for a in message.attachments] == [
        ("logo.png", True, "logo1")
    ]
    assert message.has_attachments(inline_counts=False) is False


def test_attached_mail_becomes_an_item_with_its_mime() -> None:
    inner = "From: b@example.net\nSubject: Original\n\nInner body.\n"
    message = _convert(_mixed(f"Content-Type: message/rfc822\n\n{inner}"))
    (item,) = message.attachments
    assert item.kind == "item"
    assert item.name == "Original"
    assert item.item is not None and item.item.type == "message"
    assert b"Subject: Original" in item.item.content.read()


def test_subject_words_and_received_time() -> None:
    subject = base64.b64encode(b"First line\n\nThird line").decode()
    message = _convert(
        "Received: from mx.example.net by mx.example.com; Tue, 2 Apr 2024 10:00:05 +0200\n"
        "Date: Mon, 1 Apr 2024 09:00:00 +0000\n"
        f"Subject: =?utf-8?B?{subject}?=\n\nBody\n"
    )
    assert message.subject == "First line\n\nThird line"
    assert message.received == datetime(2024, 4, 2, 8, 0, 5, tzinfo=UTC).timestamp()
    assert message.sent == datetime(2024, 4, 1, 9, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\x00\x01 not mail at all \x80\x81",
        b"Subject: =?unknown-charset?Q?=E9t=E9?=\r\nContent-Type: multipart/mixed\r\n\r\nx",
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Transfer-Encoding: "
        b"base64\r\nContent-Disposition: attachment; filename=x.bin\r\n\r\n%%%not base64",
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!",
        b"",
    ],
)
def test_undecodable_input_never_raises(data: bytes) -> None:
    message = message_from_mime(data, fallback_time=123.0)
    assert isinstance(message, Message)
    for attachment in message.attachments:
        assert attachment.length >= 0


def test_decode_words_keeps_plain_text_and_joins_split_characters() -> None:
    raw = "日本".encode()
    first = base64.b64encode(raw[:2]).decode()
    second = base64.b64encode(raw[2:]).decode()
    assert decode_words(f"=?utf-8?B?{first}?= =?utf-8?B?{second}?=") == "日本"
    assert decode_words("plain =?iso-8859-1?Q?caf=E9?= text") == "plain café text"


def test_a_codec_that_is_no_charset_keeps_the_message_whole() -> None:
    raw = (
        b"Subject: =?hex?Q?41?=\r\nFrom: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="X"\r\n\r\n--X\r\n'
        b"Content-Type: text/plain\r\n\r\nhi\r\n--X\r\n"
        b'Content-Type: application/pdf; name="r.pdf"\r\n'
        b"Content-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERg==\r\n--X--\r\n"
    )
    message = message_from_mime(raw, fallback_time=0.0)
    assert [attachment.name for attachment in message.attachments] == ["r.pdf"]
    assert message.subject == "41"

"""The names users see in a mounted mailbox: every rule by example, then properties."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange_fuse.mail import AttachmentKind
from exchange_fuse.naming import (
    EntryName,
    attachment_entry_name,
    check_template,
    folder_entry_name,
    reference_shortcut,
    templated_entry_name,
)

FILE = AttachmentKind.FILE
ITEM = AttachmentKind.ITEM
REFERENCE = AttachmentKind.REFERENCE

# Written out independently of the module, so a slip there cannot hide here.
FORBIDDEN = set('<>:"/\\|?*\x7f') | {chr(c) for c in range(0x20)}
FORBIDDEN |= {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{port}{digit}" for port in ("COM", "LPT") for digit in "123456789¹²³"
}


def file_name(subject: str | None, attachment: str | None, ordinal: int = 1) -> str:
    return attachment_entry_name(subject, attachment, FILE).render(ordinal)


def assert_safe(name: str) -> None:
    """What every entry must be, whatever the mail said."""
    assert name not in ("", ".", "..")
    assert not FORBIDDEN & set(name), name
    assert len(name) <= 240
    assert len(name.encode("utf-8")) <= 255
    assert not name.endswith((".", " "))
    # Windows looks at the text before the first dot, less trailing spaces.
    assert name.split(".")[0].rstrip(" ").upper() not in DEVICES, name


# --- rule 1: the layout, and what stands in for a missing subject or name -----------------


def test_name_is_subject_dash_attachment() -> None:
    assert file_name("Quarterly numbers", "summary.xlsx") == "Quarterly numbers-summary.xlsx"


@pytest.mark.parametrize("subject", [None, ""])
def test_without_subject_the_name_is_the_attachment_alone(subject: str | None) -> None:
    assert file_name(subject, "receipt.pdf") == "receipt.pdf"


def test_a_subject_of_only_a_reply_prefix_is_still_a_subject() -> None:
    assert file_name("AW: ", "receipt.pdf") == "AW- -receipt.pdf"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/pdf", "Scan-attachment.pdf"),
        ("image/jpeg; name=photo", "Scan-attachment.jpg"),
        ("TEXT/CSV", "Scan-attachment.csv"),
        ("application/x-something-new", "Scan-attachment.bin"),
        (None, "Scan-attachment.bin"),
    ],
)
def test_a_nameless_file_gets_attachment_and_an_extension_for_its_type(
    content_type: str | None, expected: str
) -> None:
    for missing in (None, ""):
        entry = attachment_entry_name("Scan", missing, FILE, content_type=content_type)
        assert entry.render() == expected


def test_a_name_without_extension_gets_none_added() -> None:
    entry = attachment_entry_name("Holiday", "sunset", FILE, content_type="image/png")
    assert entry.render() == "Holiday-sunset"


def test_graph_generic_names_are_used_as_they_are() -> None:
    entry = attachment_entry_name("Nightly export", "ATT00002.txt", FILE)
    assert entry.render() == "Nightly export-ATT00002.txt"
    assert entry.render(2) == "Nightly export-ATT00002 (2).txt"
    assert file_name("Invoice batch", "winmail.dat") == "Invoice batch-winmail.dat"


# --- rule 2: characters no file system accepts everywhere ---------------------------------


@pytest.mark.parametrize("bad", list('<>:"/\\|?*'))
def test_each_reserved_character_becomes_a_dash(bad: str) -> None:
    assert file_name(f"a{bad}b", f"c{bad}d.txt") == "a-b-c-d.txt"


@pytest.mark.parametrize("code", [*range(0x20), 0x7F])
def test_each_control_character_becomes_a_dash(code: int) -> None:
    assert file_name(f"x{chr(code)}y", "z.txt") == "x-y-z.txt"


def test_a_colon_cannot_make_an_ntfs_stream() -> None:
    assert file_name("Payment due", "Memo: budget.docx") == "Payment due-Memo- budget.docx"


def test_a_slash_in_a_name_never_makes_a_directory() -> None:
    name = file_name("Booking 7781", "ticket_7781/02.pdf")
    assert name == "Booking 7781-ticket_7781-02.pdf"


def test_a_windows_path_as_name_is_kept_whole_with_dashes() -> None:
    name = file_name("Plans", "\\\\nas01.example\\share\\Team\\Q3 plan.pdf")
    assert name == "Plans---nas01.example-share-Team-Q3 plan.pdf"


def test_line_breaks_in_a_subject_become_dashes() -> None:
    name = file_name("Agenda\n\nAction items", "minutes.txt")
    assert name == "Agenda--Action items-minutes.txt"


def test_a_folded_line_break_in_a_name_becomes_a_dash() -> None:
    # The name is used as Graph gives it: a folding line break is not turned back into a space.
    name = file_name("FW: plan", "Annual maintenance plan and\n review.pdf")
    assert name == "FW- plan-Annual maintenance plan and- review.pdf"


def test_reply_prefix_and_slash_in_subject() -> None:
    assert file_name("RE: rates/fees", "table.xlsx") == "RE- rates-fees-table.xlsx"


@pytest.mark.parametrize("code", [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
def test_bidirectional_controls_cannot_disguise_a_type(code: int) -> None:
    name = file_name("Salary", f"payslip{chr(code)}fdp.scr")
    assert name == "Salary-payslip-fdp.scr"


def test_lone_surrogates_from_json_still_give_a_writable_name() -> None:
    name = file_name("broken \ud83d text", "a\udc00.pdf")
    assert name == "broken - text-a-.pdf"
    name.encode("utf-8")


def test_emoji_and_other_scripts_are_kept() -> None:
    names = ["🎉party.png", "👋🏽 hi.txt", "🇯🇵trip.jpg", "2️⃣two.doc", "👩‍💻 setup.md", "фото.JPG"]
    for attachment in names:
        assert file_name("Fun", attachment) == f"Fun-{attachment}"


# --- encoded-words that reach the mount undecoded -------------------------------------------


def test_an_undecoded_base64_word_is_decoded_with_its_charset() -> None:
    # "отчёт.txt" in KOI8-R, as some senders write it inside a quoted file name.
    assert file_name("Report", "=?koi8-r?B?z9Teo9QudHh0?=") == "Report-отчёт.txt"


def test_adjacent_encoded_words_join_without_the_folding_space() -> None:
    first, second = "=?utf-8?B?UmVjaWJvIE7CsCAwMDQy?=", "=?utf-8?B?MTcucGRm?="
    assert file_name("Recibo", f"{first}\r\n {second}") == "Recibo-Recibo N° 004217.pdf"


def test_a_quoted_printable_word_is_decoded() -> None:
    assert file_name("Menu", "=?utf-8?Q?Caf=C3=A9_cr=C3=A8me.txt?=") == "Menu-Café crème.txt"


def test_a_shift_jis_label_decodes_microsoft_only_characters() -> None:
    # U+2160 (Roman numeral one) is in CP932 but not in strict Shift_JIS.
    with pytest.raises(UnicodeEncodeError):
        "Ⅰ".encode("shift_jis")
    payload = base64.b64encode("Ⅰ章.doc".encode("cp932")).decode()
    assert file_name("Book", f"=?Shift_JIS?B?{payload}?=") == "Book-Ⅰ章.doc"


def test_an_unknown_charset_leaves_the_word_as_text() -> None:
    assert file_name("x", "=?no-such-set?B?QUJD?=.pdf") == "x-=-no-such-set-B-QUJD-=.pdf"


def test_an_already_decoded_name_is_not_decoded_again() -> None:
    assert file_name("Photos", "снимок.JPG") == "Photos-снимок.JPG"
    assert file_name("Photos", "%D1%84.JPG") == "Photos-%D1%84.JPG"


# --- rule 3: trailing dots and spaces, device names, '.' and '..' --------------------------


@pytest.mark.parametrize(
    ("attachment", "expected"),
    [("draft.", "draft-"), ("draft  ", "draft--"), ("draft. .", "draft---"), ("x.pdf ", "x.pdf-")],
)
def test_each_trailing_dot_or_space_becomes_a_dash(attachment: str, expected: str) -> None:
    assert file_name(None, attachment) == expected
    assert file_name("S", attachment) == f"S-{expected}"


@pytest.mark.parametrize(
    ("text", "expected"), [(".", "-"), ("..", "--"), ("...", "---"), ("   ", "---"), (". ", "--")]
)
def test_names_of_only_dots_or_spaces_become_dashes(text: str, expected: str) -> None:
    assert file_name(None, text) == expected
    assert folder_entry_name(text).render() == expected


@pytest.mark.parametrize(
    ("attachment", "expected"),
    [
        ("CON.txt", "CON-.txt"),
        ("nul.pdf", "nul-.pdf"),
        ("Lpt3.tar.gz", "Lpt3-.tar.gz"),
        ("com7", "com7-"),
        ("AUX .log", "AUX -.log"),
        ("COM².txt", "COM²-.txt"),
        ("conout$.txt", "conout$-.txt"),
    ],
)
def test_a_device_name_gets_a_dash_after_it(attachment: str, expected: str) -> None:
    assert file_name(None, attachment) == expected


@pytest.mark.parametrize("attachment", ["con.txt", "NUL.pdf", "prn.tar.gz", "LPT1.log"])
def test_the_subject_prefix_already_keeps_device_names_away(attachment: str) -> None:
    assert file_name("Files", attachment) == f"Files-{attachment}"


def test_a_subject_with_a_dot_can_start_a_device_name() -> None:
    assert file_name("NUL.2023 report", "x.pdf") == "NUL-.2023 report-x.pdf"


@pytest.mark.parametrize("display_name", ["Aux", "con", "PRN", "Com9"])
def test_a_folder_named_like_a_device_gets_a_dash(display_name: str) -> None:
    assert folder_entry_name(display_name).render() == f"{display_name}-"


@pytest.mark.parametrize("harmless", ["CONSOLE.txt", "COM10.log", "LPT.txt", "NULL", "xCON"])
def test_names_that_only_resemble_devices_are_left_alone(harmless: str) -> None:
    assert file_name(None, harmless) == harmless


def test_a_device_name_keeps_its_dash_in_numbered_names() -> None:
    entry = attachment_entry_name(None, "aux.csv", FILE)
    assert [entry.render(n) for n in (1, 2)] == ["aux-.csv", "aux- (2).csv"]


# --- rule 4: length in characters and bytes, and which extension survives ------------------

LONG_SUBJECT = (
    "Status of the warehouse automation rollout across all northern depots, including "
    "conveyor upgrades, scanner replacement, staff training plans, open risks, budget "
    "variance and the decisions we need from the steering committee this week"
)


def test_a_long_name_is_cut_to_240_characters_keeping_the_extension() -> None:
    name = file_name(LONG_SUBJECT, "Warehouse_Automation_Rollout_Status_Week_17_final.pdf")
    full_stem = f"{LONG_SUBJECT}-Warehouse_Automation_Rollout_Status_Week_17_final"
    assert len(name) == 240
    assert name == full_stem[:236] + ".pdf"


def test_names_equal_after_the_cut_are_told_apart_by_number() -> None:
    week_17 = attachment_entry_name(LONG_SUBJECT, "Rollout_Status_Report_Week_17.pdf", FILE)
    week_18 = attachment_entry_name(LONG_SUBJECT, "Rollout_Status_Report_Week_18.pdf", FILE)
    assert week_17.render() == week_18.render()
    second = week_18.render(2)
    assert second != week_17.render()
    assert len(second) == 240
    assert second.endswith(" (2).pdf")
    assert second[:232] == week_17.render()[:232]


def test_the_byte_limit_cuts_names_in_other_scripts() -> None:
    name = file_name("会議", "資" * 100 + ".xlsx")
    # 255 bytes less ".xlsx" leaves 250: "会議-" takes 7, then 81 three-byte characters.
    assert name == "会議-" + "資" * 81 + ".xlsx"
    assert len(name.encode()) == 255


def test_two_byte_characters_fill_the_byte_limit_exactly() -> None:
    name = folder_entry_name("ж" * 200).render()
    assert name == "ж" * 127
    assert len(name.encode()) == 254


def test_the_extension_never_comes_from_the_subject() -> None:
    subject = "Release notes and migration checklist for rev 3.2 of the billing platform " * 4
    name = file_name(subject, "sunrise")
    assert len(name) == 240
    assert name == (subject + "-sunrise")[:240].rstrip(" ") + "-"
    assert name.endswith(" and-")


def test_a_cut_that_ends_in_a_space_ends_in_a_dash() -> None:
    subject = "word " * 60
    assert folder_entry_name(subject).render() == ("word " * 48)[:-1] + "-"


def test_only_the_last_suffix_is_the_extension() -> None:
    name = file_name(LONG_SUBJECT, "nightly-backup.tar.gz")
    assert name.endswith(".gz")
    assert not name.endswith(".tar.gz")
    assert len(name) == 240


def test_an_extension_is_one_to_nine_characters() -> None:
    nine = attachment_entry_name(LONG_SUBJECT * 2, "x.abcdefghi", FILE)
    assert nine.extension == ".abcdefghi"
    assert nine.render().endswith(".abcdefghi")
    ten = attachment_entry_name(LONG_SUBJECT * 2, "x.abcdefghij", FILE)
    assert ten.extension == ""
    assert ten.render() == (LONG_SUBJECT * 2)[:240]


def test_a_leading_dot_name_is_all_extension() -> None:
    entry = attachment_entry_name(None, ".htaccess", FILE)
    assert entry == EntryName("", ".htaccess")
    assert entry.render() == ".htaccess"
    assert entry.render(2) == "(2).htaccess"
    cut = file_name(LONG_SUBJECT * 2, ".htaccess")
    assert cut == (LONG_SUBJECT * 2)[:231] + ".htaccess"


def test_invalid_characters_in_an_extension_are_replaced_and_kept() -> None:
    entry = attachment_entry_name(LONG_SUBJECT * 2, "scan.p:f", FILE)
    assert entry.extension == ".p-f"
    assert entry.render() == (LONG_SUBJECT * 2)[:236] + ".p-f"


def test_folders_keep_no_extension_when_cut() -> None:
    name = folder_entry_name("a" * 300 + ".txt").render()
    assert name == "a" * 240


# A cut must keep whole user-perceived characters: each of these is one on screen.
CLUSTERS = [
    "e\u0301",  # e + combining acute
    "👍🏿",  # thumbs up + skin tone
    "🇯🇵",  # flag: two regional indicators
    "❤️",  # heart + variation selector
    "1️⃣",  # keycap
    "👨‍👩‍👧",  # family joined by ZWJ
    "\u1112\u1161\u11ab",  # Hangul syllable as three jamo (NFD)
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # tag sequence
]


@pytest.mark.parametrize("cluster", CLUSTERS)
@pytest.mark.parametrize("pad", range(8))
def test_a_cut_never_splits_a_character_sequence(cluster: str, pad: int) -> None:
    name = file_name("x" * pad + cluster * 200, "a.pdf")
    kept = name.removesuffix(".pdf")[pad:]
    assert kept == cluster * (len(kept) // len(cluster))
    assert_safe(name)


def test_an_absurdly_long_combining_sequence_is_cut_between_code_points() -> None:
    name = folder_entry_name("a" + "\u0301" * 500).render()
    assert name == "a" + "\u0301" * 127
    assert_safe(name)


# --- rule 5: kinds of attachment --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "item_type", "expected"),
    [
        (None, None, "FW- complaint-attachment.eml"),
        ("", "message", "FW- complaint-attachment.eml"),
        ("First complaint", None, "FW- complaint-First complaint.eml"),
        ("First complaint", "message", "FW- complaint-First complaint.eml"),
        ("Copy.EML", "message", "FW- complaint-Copy.EML"),
        ("Site visit", "event", "FW- complaint-Site visit.ics"),
        ("visit.ICS", "event", "FW- complaint-visit.ICS"),
        ("Jane Roe", "contact", "FW- complaint-Jane Roe.vcf"),
        ("Jane Roe", "#microsoft.graph.contact", "FW- complaint-Jane Roe.vcf"),
        ("Accepted: sync", "eventMessage", "FW- complaint-Accepted- sync.eml"),
        ("Odd", "somethingNew", "FW- complaint-Odd.eml"),
    ],
)
def test_item_attachments_get_the_extension_of_their_content(
    name: str | None, item_type: str | None, expected: str
) -> None:
    entry = attachment_entry_name("FW: complaint", name, ITEM, item_type=item_type)
    assert entry.render() == expected


def test_an_item_without_a_type_follows_its_content_type() -> None:
    entry = attachment_entry_name("x", "Card", ITEM, content_type="text/vcard")
    assert entry.render() == "x-Card.vcf"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Budget 2025.xlsx", "Shared-Budget 2025.xlsx.url"),
        ("Link.URL", "Shared-Link.URL"),
        (None, "Shared-attachment.url"),
    ],
)
def test_reference_attachments_are_url_shortcuts(name: str | None, expected: str) -> None:
    assert attachment_entry_name("Shared", name, REFERENCE).render() == expected


def test_a_kind_extension_survives_a_cut() -> None:
    entry = attachment_entry_name(LONG_SUBJECT * 2, "Budget.xlsx", REFERENCE)
    assert entry.render().endswith(".url")
    assert entry.render(7).endswith(" (7).url")


def test_the_shortcut_file_points_at_the_link() -> None:
    body = reference_shortcut("https://contoso.example/sites/team/Shared%20Docs/plan.xlsx")
    expected = (
        b"[InternetShortcut]\r\nURL=https://contoso.example/sites/team/Shared%20Docs/plan.xlsx\r\n"
    )
    assert body == expected


def test_a_shortcut_link_cannot_add_lines_and_stays_ascii() -> None:
    body = reference_shortcut("https://x.example/a b/ü?q=1\r\nIconFile=\\\\evil\\i.ico")
    assert body.count(b"\r\n") == 2
    assert body.splitlines() == [
        b"[InternetShortcut]",
        b"URL=https://x.example/a%20b/%C3%BC?q=1%0D%0AIconFile=%5C%5Cevil%5Ci.ico",
    ]


# --- rule 6: numbering repeated names ---------------------------------------------------


def test_repeats_are_numbered_before_the_extension() -> None:
    entry = attachment_entry_name("AW: AW: mockups", "image.png", FILE)
    assert [entry.render(n) for n in (1, 2, 3)] == [
        "AW- AW- mockups-image.png",
        "AW- AW- mockups-image (2).png",
        "AW- AW- mockups-image (3).png",
    ]
    assert folder_entry_name("Projects").render(2) == "Projects (2)"


def test_a_number_the_stem_already_ends_with_does_not_collide() -> None:
    entry = folder_entry_name("x" * 236 + " (2)")
    assert entry.render() == "x" * 236 + " (2)"
    assert entry.render(2) != entry.render()
    assert entry.render(2).endswith(" (2)")
    assert len(entry.render(2)) == 239


def test_large_numbers_stay_within_the_limits() -> None:
    name = file_name("会議" * 200, "a.pdf", ordinal=10000)
    assert name.endswith("会 (10000).pdf")
    assert_safe(name)


# --- rule 7 and 9: folders and templates -------------------------------------------------


def test_folder_names_are_made_safe() -> None:
    assert folder_entry_name("Projects/2024: Q1").render() == "Projects-2024- Q1"
    assert folder_entry_name("Inbox").render() == "Inbox"
    assert folder_entry_name(None).render() == "folder"
    assert folder_entry_name("").render() == "folder"


RECEIVED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
FIELDS: dict[str, str | datetime | None] = {
    "subject": "Order: 4411",
    "attachment": "label.pdf",
    "sender": "shop@example.com",
    "received": RECEIVED,
    "message_id": "<abc/123@mail.example>",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{received:%Y-%m-%d}_{subject}-{attachment}", "2024-05-06_Order- 4411-label.pdf"),
        ("{sender}/{attachment}", "shop@example.com-label.pdf"),
        ("{subject:.5}-{attachment}", "Order-label.pdf"),
        ("{message_id}", "-abc-123@mail.example-"),
        ("{received}", "2024-05-06 07-08-09+00-00"),
        ("{attachment}_{received:%H%M}", "label.pdf_0708"),
    ],
)
def test_templates_fill_fields_and_the_result_is_made_safe(template: str, expected: str) -> None:
    assert templated_entry_name(template, FIELDS).render() == expected


def test_a_template_keeps_the_attachment_extension_when_cut() -> None:
    entry = templated_entry_name("{subject}-{attachment}", {**FIELDS, "subject": LONG_SUBJECT})
    assert entry.extension == ".pdf"
    assert entry.render(3).endswith(" (3).pdf")
    assert len(entry.render(3)) == 240


def test_a_template_with_the_attachment_mid_name_protects_no_extension() -> None:
    entry = templated_entry_name("{attachment}_{received:%Y}", FIELDS)
    assert entry == EntryName("label.pdf_2024", "")


@pytest.mark.parametrize(
    ("subject", "attachment", "kind"),
    [("RE: x", "a.pdf", FILE), ("Hi", None, ITEM), ("Link", "b", REFERENCE), ("Z", "", FILE)],
)
def test_the_default_layout_as_template_matches_the_default(
    subject: str, attachment: str | None, kind: AttachmentKind
) -> None:
    fields = {"subject": subject, "attachment": attachment}
    via_template = templated_entry_name("{subject}-{attachment}", fields, kind)
    assert via_template == attachment_entry_name(subject, attachment, kind)


def test_missing_template_fields_are_empty_and_empty_results_fall_back() -> None:
    assert templated_entry_name("{sender}+{attachment}", {"attachment": "a.txt"}).render() == (
        "+a.txt"
    )
    assert templated_entry_name("{subject}", {"attachment": "a.txt"}).render() == "a.txt"
    assert templated_entry_name("{received:%Y}", {}).render() == "attachment.bin"


def test_item_and_reference_templates_always_end_in_their_extension() -> None:
    item = templated_entry_name("{subject}", {"subject": "Meeting"}, ITEM, item_type="event")
    assert item.render() == "Meeting.ics"
    link = templated_entry_name("{subject}", {"subject": "Plan"}, REFERENCE)
    assert link.render() == "Plan.url"


@pytest.mark.parametrize(
    "template",
    ["{subject.__class__}", "{folder}", "{subject!r}", "{attachment[0]}", "{subject", "{0}"],
)
def test_bad_templates_are_refused_with_a_reason(template: str) -> None:
    with pytest.raises(ValueError, match="name template"):
        check_template(template)


def test_a_format_spec_a_field_cannot_take_is_refused() -> None:
    with pytest.raises(ValueError, match="name template"):
        check_template("{subject:%Y}")
    check_template("{received:%Y-%m-%d}_{subject}-{attachment}")


# --- properties over any input -----------------------------------------------------------

# Long inputs come from repeating a drawn piece, so huge names cost little to generate.
any_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda piece, times: piece * times, st.text(min_size=1, max_size=12), st.integers(1, 600)
    ),
)
optional_text = st.none() | any_text
kinds = st.sampled_from(AttachmentKind)
item_types = st.sampled_from([None, "message", "event", "contact", "other"])
ordinals = st.integers(1, 10_000)
safe_extension = st.text(
    st.characters(categories=["L", "N"], exclude_characters="\u0130"), min_size=1, max_size=9
)


@given(optional_text, optional_text, kinds, item_types, ordinals)
def test_any_attachment_gives_a_safe_name(
    subject: str | None, attachment: str | None, kind: AttachmentKind, item: str | None, n: int
) -> None:
    entry = attachment_entry_name(subject, attachment, kind, item_type=item)
    assert_safe(entry.render(n))
    assert entry.render(n).endswith(entry.extension)


@given(optional_text, ordinals)
def test_any_folder_gives_a_safe_name(display_name: str | None, n: int) -> None:
    assert_safe(folder_entry_name(display_name).render(n))


@given(optional_text, any_text, safe_extension, ordinals)
def test_a_safe_extension_is_always_kept(
    subject: str | None, base: str, extension: str, n: int
) -> None:
    name = attachment_entry_name(subject, f"{base}.{extension}", FILE).render(n)
    assert name.endswith(f".{extension}")
    assert_safe(name)


@given(optional_text, optional_text, kinds, st.lists(ordinals, min_size=2, max_size=6))
def test_different_numbers_give_different_names(
    subject: str | None, attachment: str | None, kind: AttachmentKind, numbers: list[int]
) -> None:
    entry = attachment_entry_name(subject, attachment, kind)
    rendered = {n: entry.render(n) for n in {1, *numbers}}
    assert len(set(rendered.values())) == len(rendered)


@given(optional_text, st.sampled_from(sorted({"event", "contact", "message", None}, key=str)))
def test_item_attachments_always_end_in_their_kind(
    attachment: str | None, item: str | None
) -> None:
    wanted = {"event": ".ics", "contact": ".vcf"}.get(item or "", ".eml")
    name = attachment_entry_name("S", attachment, ITEM, item_type=item).render()
    assert name.lower().endswith(wanted)


@given(any_text, optional_text, optional_text, ordinals)
def test_any_template_result_is_safe(
    literal: str, subject: str | None, attachment: str | None, n: int
) -> None:
    template = literal.replace("{", "{{").replace("}", "}}") + "{subject}-{attachment}"
    fields = {"subject": subject, "attachment": attachment, "received": RECEIVED}
    assert_safe(templated_entry_name(template, fields).render(n))


@given(st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters()))
def test_lone_surrogates_never_reach_a_name(text: str) -> None:
    assert_safe(file_name(text, text))


@given(optional_text, any_text, ordinals)
def test_a_cut_only_shortens_the_stem(subject: str | None, base: str, n: int) -> None:
    entry = attachment_entry_name(subject, f"{base}.txt", FILE)
    number = "" if n == 1 else f" ({n})" if entry.stem else f"({n})"
    suffix = f"{number}.txt"
    shown_stem = entry.render(n).removesuffix(suffix)
    assert entry.stem.startswith(shown_stem)


@pytest.mark.parametrize(
    "word", ["=?hex?Q?41?=", "=?zlib?B?eJw=?=", "=?rot13?Q?nop?=", "=?idna?Q?xn--?=",
             "=?punycode?Q?--a?=", "=?undefined?Q?a?=", "=?uu?Q?x?="],
)  # fmt: skip
def test_encoded_words_naming_codecs_that_are_no_charsets_stay_as_they_came(word: str) -> None:
    # Python knows these "codecs" (hex, zlib, ...) but they are no character sets.
    name = attachment_entry_name(word, "report.pdf", AttachmentKind.FILE).render()
    assert name == word.replace("?", "-") + "-report.pdf"


def test_a_subject_that_decodes_to_nothing_counts_as_none() -> None:
    assert attachment_entry_name("=?utf-8?Q??=", "invoice.pdf", AttachmentKind.FILE).render() == (
        "invoice.pdf"
    )


@pytest.mark.parametrize("extension", [".pdf", ".𝒜𝒜𝒜𝒜𝒜𝒜𝒜𝒜𝒜"])
@pytest.mark.parametrize("ordinal", [1, 2, 10])
def test_a_device_name_cut_to_length_stays_within_the_limits(extension: str, ordinal: int) -> None:
    name = attachment_entry_name(None, "CON" + " " * 300 + extension, AttachmentKind.FILE)
    rendered = name.render(ordinal)
    assert len(rendered) <= 240 and len(rendered.encode()) <= 255
    assert rendered.endswith(extension)

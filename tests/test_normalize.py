"""Entity name / description / type normalisation (method.md §3.4). Pure Python, no Spark."""

from __future__ import annotations

import pytest

from graphgen_spark.config import DEFAULT_ENTITY_TYPES
from graphgen_spark.graph.normalize import clean_text, display_name, name_key, normalise_type


def key_of(raw: str) -> str:
    return name_key(display_name(raw))


# -- display: quotes ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        '"Rome"',
        "'Rome'",
        "`Rome`",
        "“Rome”",
        "‘Rome’",
        "「Rome」",
        "『Rome』",
    ],
)
def test_each_quote_pair_is_stripped(raw):
    assert display_name(raw) == "Rome"


@pytest.mark.parametrize(
    "raw",
    [
        '""Rome""',
        "\"'Rome'\"",
        "『「Rome」』",
        "「“‘`Rome`’”」",
        '  " 「 Rome 」 "  ',  # whitespace inside and around every layer
        "'“Rome”'",
    ],
)
def test_nested_quotes_are_stripped_repeatedly(raw):
    assert display_name(raw) == "Rome"


@pytest.mark.parametrize(
    "raw",
    [
        '"Rome',  # no closing quote
        "Rome'",  # no opening quote
        "'Rome\"",  # mismatched pair
        "“Rome“",  # a left quote on both sides is not a pair
        "」Rome「",  # reversed CJK brackets
        "Rome's",
    ],
)
def test_unmatched_quotes_are_kept(raw):
    assert display_name(raw) == raw


def test_quotes_inside_a_name_are_kept():
    assert display_name('The "Eagle" Nebula') == 'The "Eagle" Nebula'
    assert display_name("《本草纲目》") == "《本草纲目》"  # book-title marks are not quotes
    # only the outer matching pair goes, the inner unmatched quote stays
    assert display_name("'\"Rome'") == '"Rome'


# -- display: HTML, control characters, whitespace -----------------------------------------
def test_html_entities_are_unescaped():
    assert display_name("Tom &amp; Jerry") == "Tom & Jerry"
    assert display_name("&lt;b&gt;") == "<b>"
    assert display_name("caf&eacute;") == "café"
    assert display_name("&#x4E2D;&#22269;") == "中国"


def test_html_escaped_quotes_are_stripped_after_unescaping():
    assert display_name("&quot;Rome&quot;") == "Rome"
    assert display_name("&#39;Rome&#39;") == "Rome"
    assert display_name("&ldquo;Rome&rdquo;") == "Rome"


def test_control_characters_are_deleted():
    assert display_name("Ro\x00m\x07e") == "Rome"
    assert display_name("\x1bRome\x7f") == "Rome"
    assert display_name("\x85Rome\x9f") == "Rome"  # C1 range U+007F-U+009F
    assert display_name("&#7;Rome") == "Rome"  # a control character produced by unescaping
    # deleting a control character can expose quotes, which are then stripped
    assert display_name('\x00"Rome"\x00') == "Rome"


def test_whitespace_is_trimmed_and_collapsed():
    assert display_name("  Roman   Empire  ") == "Roman Empire"
    assert display_name("Roman\u3000\u00a0 Empire") == "Roman Empire"  # ideographic, nbsp
    assert display_name('" Roman  Empire "') == "Roman Empire"


def test_display_keeps_case_and_width():
    assert display_name("ROMAN Empire") == "ROMAN Empire"
    assert display_name("ＲＯＭＥ") == "ＲＯＭＥ"
    assert display_name("Straße") == "Straße"


# -- keys ------------------------------------------------------------------------------------
def test_key_is_nfkc_then_casefold():
    assert name_key("ＲＯＭＥ") == "rome"  # full-width letters
    assert name_key("Ｒｏｍｅ１２３") == "rome123"
    assert name_key("ﬁsh") == "fish"  # ligature
    assert name_key("Straße") == name_key("STRASSE") == "strasse"
    assert name_key("ΣΊΣΥΦΟΣ") == name_key("σίσυφος")
    # the combining form and the precomposed form are one key
    assert name_key("Cafe\u0301") == name_key("Café")


def test_key_of_chinese_names_is_unchanged():
    assert key_of("云南省农业科学院") == "云南省农业科学院"
    assert key_of("「云南」") == "云南"
    assert key_of("《本草纲目》") == "《本草纲目》"


@pytest.mark.parametrize(
    "raw",
    [
        "Roman Empire",
        "ROMAN EMPIRE",
        "roman empire",
        '"ROMAN EMPIRE"',
        "'Roman Empire'",
        "“Roman  Empire”",
        "「roman empire」",
        "&quot;Roman Empire&quot;",
        "  Roman\u3000Empire ",
        "ＲＯＭＡＮ ＥＭＰＩＲＥ",
        "Roman\x00 Empire",
    ],
)
def test_mentions_of_one_entity_share_a_key(raw):
    assert key_of(raw) == "roman empire"


def test_different_names_keep_different_keys():
    assert key_of("Rome") != key_of("Roma")
    assert key_of("Roman Empire") != key_of("RomanEmpire")


@pytest.mark.parametrize(
    "raw", [None, "", "   ", '""', "''", "“”", "「」", '"  "', "『「」』", "\x00\x01"]
)
def test_empty_names_give_an_empty_key(raw):
    assert display_name(raw) == ""
    assert key_of(raw or "") == ""


def test_a_lone_quote_is_not_empty():
    assert display_name('"') == '"'
    assert key_of('"') == '"'


# -- descriptions ------------------------------------------------------------------------------
def test_clean_text_keeps_case_and_quotes():
    assert clean_text('  "Rome" was Founded  ') == '"Rome" was Founded'
    assert clean_text("“Rome”") == "“Rome”"


def test_clean_text_unescapes_and_collapses():
    assert clean_text("A &amp; B &lt;c&gt;") == "A & B <c>"
    assert clean_text("line one\n\n\tline   two ") == "line one line two"
    assert clean_text("a\x00\x07b") in ("ab", "a b")  # control characters never survive
    assert "\x07" not in clean_text("x\x07y") and "\x85" not in clean_text("x\x85y")


@pytest.mark.parametrize("raw", [None, "", " \n\t "])
def test_clean_text_of_nothing_is_empty(raw):
    assert clean_text(raw) == ""


# -- types -------------------------------------------------------------------------------------
ALLOWED = tuple(DEFAULT_ENTITY_TYPES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("person", "person"),
        ("PERSON", "person"),
        ("  Location ", "location"),
        ("Organization", "organization"),
        ("spaceship", "other"),
        ("", "other"),
        (None, "other"),
        ("person, location", "other"),
    ],
)
def test_normalise_type_strict(raw, expected):
    assert normalise_type(raw, ALLOWED, strict=True) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("person", "person"),
        (" PERSON ", "person"),
        ("Spaceship", "spaceship"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_normalise_type_lenient(raw, expected):
    assert normalise_type(raw, ALLOWED, strict=False) == expected


def test_default_types_are_all_kept_when_strict():
    for t in ALLOWED:
        assert normalise_type(t.upper(), ALLOWED, strict=True) == t


# -- invisible characters: zero-width and bidi controls ---------------------------------------
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
BIDI = ["\u200e", "\u200f", "\u061c", *(chr(c) for c in range(0x202A, 0x202F))]
BIDI += [chr(c) for c in range(0x2066, 0x206A)]


@pytest.mark.parametrize("ch", ZERO_WIDTH + BIDI)
def test_invisible_characters_never_split_a_name(ch):
    assert display_name(f"Ma{ch}rie Curie{ch}") == "Marie Curie"
    assert key_of(f"{ch}Marie {ch}Curie") == key_of("Marie Curie") == "marie curie"
    assert clean_text(f"A{ch} physicist.{ch}") == "A physicist."
    assert name_key(f"Ro{ch}me") == "rome"  # a key made from an uncleaned display too


def test_invisible_characters_from_html_entities_are_removed():
    assert display_name("Marie&#8203;Curie&#x202E;") == "MarieCurie"
    assert clean_text("a&#xFEFF;b") == "ab"


def test_visible_neighbours_of_the_invisible_ranges_are_kept():
    # U+2061 (function application), U+206A (deprecated), U+202F (narrow nbsp) are not removed
    assert display_name("a\u2061b") == "a\u2061b"
    assert clean_text("x\u202fy") == "x y"  # a space, collapsed as before

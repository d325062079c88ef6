"""OData $filter parsing and evaluation against backed-up entities, without storage."""

from __future__ import annotations

import operator
import re

import pytest

from tablebackup.core.errors import InvalidInput
from tablebackup.storage import odatafilter
from tablebackup.storage.odatafilter import ODataFilter, parse_filter

ENTITY = {
    "PartitionKey": "CANDIDATE",
    "RowKey": "O'Brien",
    "Timestamp": "2026-11-25T14:08:48.0405697Z",
    "name": "Zoë",
    "age": 5,
    "active": True,
    "score@odata.type": "Edm.Double",
    "score": 2.0,
    "nan@odata.type": "Edm.Double",
    "nan": "NaN",
    "inf@odata.type": "Edm.Double",
    "inf": "Infinity",
    "neginf@odata.type": "Edm.Double",
    "neginf": "-Infinity",
    "big@odata.type": "Edm.Int64",
    "big": "9223372036854775807",
    "small@odata.type": "Edm.Int64",
    "small": "-9223372036854775808",
    "mid@odata.type": "Edm.Int64",
    "mid": "1000",
    "when@odata.type": "Edm.DateTime",
    "when": "2024-01-02T03:04:05.1234567Z",
    "id@odata.type": "Edm.Guid",
    "id": "c9da6455-213d-42c9-9a79-3e9149a57833",
    "photo@odata.type": "Edm.Binary",
    "photo": "AAH/",
}
OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le")


def matches(text: str, entity: dict = ENTITY) -> bool:
    return parse_filter(text).matches(entity)


def refusal(text: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_filter(text)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert re.match(r"invalid filter at position \d+: \S", message), message
    return message


def test_the_seed_example_selects_one_entity():
    f = parse_filter("PartitionKey eq 'CANDIDATE' and RowKey eq 'O''Brien'")

    assert isinstance(f, ODataFilter)
    assert f.text == "PartitionKey eq 'CANDIDATE' and RowKey eq 'O''Brien'"
    assert f.matches(ENTITY)
    assert not f.matches({**ENTITY, "RowKey": "OBrien"})
    assert not f.matches({**ENTITY, "PartitionKey": "candidate"})


def test_doubled_quotes_and_unicode_in_strings():
    assert matches("RowKey eq 'O''Brien'")
    assert not matches("RowKey eq 'O''''Brien'")
    assert matches("name eq 'Zoë'")
    assert matches("x eq ''''", {"x": "'"})
    assert matches("x eq ''", {"x": ""})
    assert matches("x eq '日本 😀'", {"x": "日本 😀"})


def test_precedence_is_not_then_and_then_or():
    # A is true, B and C are false: "A or B and C" is A or (B and C), which is true.
    a, b, c = "age eq 5", "age eq 6", "age eq 7"
    assert matches(f"{a} or {b} and {c}")
    assert not matches(f"({a} or {b}) and {c}")
    assert matches(f"{b} and {c} or {a}")
    assert not matches(f"not ({a}) and {b}")  # (not A) and B
    assert not matches(f"not ({a}) or {b}")  # (not A) or B
    assert matches(f"not ({b} and {a})")
    assert matches(f"not not ({a})")


@pytest.mark.parametrize("text", ["not age eq 5", "age eq 5 and not age eq 6", "not not age eq 5", "not 5 eq age"])
def test_not_before_a_bare_comparison_is_refused(text):
    # OData puts `not` above eq, so the service reads "not a eq 1" as "(not a) eq 1": refuse the
    # spelling that means something else there rather than read it as "not (a eq 1)".
    message = refusal(text)
    assert "'not' needs parentheses around a comparison" in message and "not (a eq 1)" in message


def test_whitespace_is_flexible():
    assert matches("  PartitionKey   eq\t'CANDIDATE'\n ")
    assert matches("(age eq 5)and(active eq true)")
    assert matches("((((age eq 5))))")


def test_keywords_only_match_whole_words():
    entity = {"notes": 1, "order": 2, "android": 3, "trueValue": 4, "X": 5, "datetime": 6, "guid": 7, "eqx": 8}
    text = "notes eq 1 and order eq 2 and android eq 3 and trueValue eq 4 and X eq 5 and datetime eq 6 and guid eq 7"
    assert matches(text + " and eqx eq 8", entity)


def _expected(op: str, order: int) -> bool:
    """What `property op literal` gives when the property is less (-1), equal (0) or greater (1)."""
    return getattr(operator, op)(order, 0)


# (property, a literal below its value, one equal to it, one above it); None where none exists.
ORDERED = [
    ("name", "'Zoa'", "'Zoë'", "'Zoë!'"),
    ("name", "'Z'", "'Zoë'", "'a'"),  # ordinal and case-sensitive: 'Z' < 'a'
    ("name", "'Zoe'", "'Zoë'", "'Zo\U0001f600'"),
    # By UTF-16 code unit, as the service: an astral character (a surrogate pair) is below U+FFFD.
    ("name", "'Zo'", "'Zoë'", "'Zo\ufffd'"),
    ("age", "4", "5", "6"),
    ("age", "-7", "5", "2147483647"),
    ("mid", "999L", "1000L", "1001L"),
    ("big", "9223372036854775806L", "9223372036854775807L", None),
    ("small", None, "-9223372036854775808L", "-9223372036854775807L"),
    ("score", "1.5", "2.0", "2.5"),
    ("score", "1.5E-3", "2d", "1e10"),
    ("active", "false", "true", None),
    ("when", "datetime'2024-01-02T03:04:05.1234566Z'", "datetime'2024-01-02T03:04:05.1234567Z'", None),
    ("when", None, "datetime'2024-01-02T05:04:05.1234567+02:00'", "datetime'2024-01-02T03:04:05.1234568Z'"),
    (
        "when",
        "datetime'2024-01-02T03:04Z'",
        "datetime'2024-01-01T21:34:05.1234567-05:30'",
        "datetime'2024-01-03T00:00Z'",
    ),
    ("Timestamp", "datetime'2026-11-25T14:08:48.04056Z'", "datetime'2026-11-25T14:08:48.0405697Z'", None),
    (
        "id",
        "guid'c9da6455-213d-42c9-9a79-3e9149a57832'",
        "guid'C9DA6455-213D-42C9-9A79-3E9149A57833'",
        "guid'D0000000-0000-0000-0000-000000000000'",
    ),
    ("photo", "X'0001fe'", "X'0001FF'", "binary'000200'"),
    ("photo", "binary'0001'", "binary'0001ff'", "X'0001ff00'"),
]


@pytest.mark.parametrize(("prop", "below", "equal", "above"), ORDERED)
@pytest.mark.parametrize("op", OPERATORS)
def test_every_operator_on_every_type(prop, below, equal, above, op):
    for literal, order in ((below, 1), (equal, 0), (above, -1)):
        if literal is None:
            continue
        assert matches(f"{prop} {op} {literal}") is _expected(op, order), f"{prop} {op} {literal}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4 lt age", True),
        ("5 lt age", False),
        ("5 le age", True),
        ("6 gt age", True),
        ("6 ge age", True),
        ("6 lt age", False),
        ("'CANDIDATE' eq PartitionKey", True),
        ("'CANDIDATE' ne PartitionKey", False),
        ("datetime'2024-01-02T03:04:05.1234566Z' lt when", True),
        ("datetime'2024-01-02T03:04:05.1234568Z' lt when", False),
        ("9223372036854775806L lt big", True),
        ("'x' eq missing", False),
        ("true eq active", True),
    ],
)
def test_a_literal_on_the_left_mirrors_the_operator(text, expected):
    assert matches(text) is expected


def test_int64_is_exact_over_its_full_range():
    assert matches("big eq 9223372036854775807L")
    assert matches("big gt 9223372036854775806L")
    assert not matches("big gt 9223372036854775807L")
    assert matches("small eq -9223372036854775808L")
    assert matches("small lt -9223372036854775807L")
    # 2**53 + 1 is not a double: an Int64 compares as an integer, never through a float.
    assert matches("x ne 9007199254740992L", {"x@odata.type": "Edm.Int64", "x": "9007199254740993"})


@pytest.mark.parametrize("op", OPERATORS)
def test_numbers_compare_only_with_a_literal_of_their_own_type(op):
    # "The constant value must be of the same data type as the property" (the service's docs):
    # Int32 5, Int64 5L and Double 5.0 are three different constants. Azurite compares Int32 and
    # Double by value; this follows the documentation, as the README says.
    values = {
        "Edm.Int32": {"v": 5},
        "Edm.Int64": {"v@odata.type": "Edm.Int64", "v": "5"},
        "Edm.Double": {"v@odata.type": "Edm.Double", "v": 5.0},
        "bare Double": {"v@odata.type": "Edm.Double", "v": 5},
    }
    literals = {"Edm.Int32": ("4", "5", "6"), "Edm.Int64": ("4L", "5L", "6L"), "Edm.Double": ("4.5", "5.0", "5d")}
    for value_type, entity in values.items():
        for literal_type, spellings in literals.items():
            same = value_type.endswith(literal_type.removeprefix("Edm."))
            for literal in spellings:
                expected = same and getattr(operator, op)(float(entity["v"]), float(literal.rstrip("Ld")))
                assert matches(f"v {op} {literal}", entity) is expected, (value_type, f"v {op} {literal}")


@pytest.mark.parametrize("literal", ["1.0", "-1e300", "2d"])
def test_nan_is_unequal_to_everything(literal):
    assert [matches(f"nan {op} {literal}") for op in OPERATORS] == [False, True, False, False, False, False]
    assert [matches(f"{literal} {op} nan") for op in OPERATORS] == [False, True, False, False, False, False]
    assert matches(f"not (nan eq {literal})")


def test_infinities_order_normally():
    assert matches("inf gt 1.7976931348623157e308") and matches("inf ge 9.3e18")
    assert matches("neginf lt -1.7976931348623157e308") and matches("neginf ne 0.0")
    assert not matches("inf lt 0.0") and not matches("neginf gt 0.0")


def test_datetime_keeps_the_seventh_digit():
    assert matches("when gt datetime'2024-01-02T03:04:05.1234566Z'")
    assert not matches("when gt datetime'2024-01-02T03:04:05.1234568Z'")
    assert matches("when eq datetime'2024-01-02T03:04:05.1234567Z'")
    assert not matches("when eq datetime'2024-01-02T03:04:05.123456Z'")
    # An offset names the same instant; one without a zone is UTC.
    assert matches("when eq datetime'2024-01-02T04:04:05.1234567+01:00'")
    assert matches("when eq datetime'2024-01-01T23:04:05.1234567-04:00'")
    assert matches("when eq datetime'2024-01-02T03:04:05.1234567'")
    assert matches("when gt datetime'2024-01-02T03:04:05.1234566+00:00'")


def test_timestamp_is_a_datetime():
    assert matches("Timestamp gt datetime'2026-01-01T00:00:00Z'")
    assert matches("Timestamp lt datetime'2026-11-25T14:08:48.0405698Z'")
    assert not matches("Timestamp eq '2026-11-25T14:08:48.0405697Z'")


def test_guid_ignores_case_and_binary_compares_bytes():
    upper = {"g@odata.type": "Edm.Guid", "g": "C9DA6455-213D-42C9-9A79-3E9149A57833"}
    assert matches("g eq guid'c9da6455-213d-42c9-9a79-3e9149a57833'", upper)
    assert not matches("g ne guid'c9da6455-213d-42c9-9a79-3e9149a57833'", upper)
    assert matches("photo eq X'0001ff' and photo eq binary'0001FF'")
    empty = {"b@odata.type": "Edm.Binary", "b": ""}
    assert matches("b eq X''", empty) and matches("b lt X'00'", empty)


@pytest.mark.parametrize("op", OPERATORS)
def test_a_missing_property_is_false_for_every_operator(op):
    assert not matches(f"missing {op} 1")
    assert not matches(f"missing {op} 'x'")
    assert matches(f"not (missing {op} 1)")
    assert not matches(f"x {op} 1", {"x": None})


@pytest.mark.parametrize("op", OPERATORS)
@pytest.mark.parametrize(
    "comparison",
    [
        "name {op} 5",
        "age {op} '5'",
        "active {op} 1",  # True == 1 in Python; not to the service
        "age {op} true",
        "id {op} 'c9da6455-213d-42c9-9a79-3e9149a57833'",
        "big {op} '9223372036854775807'",
        "when {op} '2024-01-02T03:04:05.1234567Z'",
        "photo {op} 'AAH/'",
        "name {op} datetime'2024-01-02T03:04:05Z'",
        "score {op} X'00'",
        "PartitionKey {op} guid'c9da6455-213d-42c9-9a79-3e9149a57833'",
    ],
)
def test_a_type_mismatch_is_false_for_every_operator(comparison, op):
    assert not matches(comparison.format(op=op))


def test_a_value_that_does_not_hold_its_type_never_matches():
    broken = {
        "i@odata.type": "Edm.Int64",
        "i": "twelve",
        "d@odata.type": "Edm.DateTime",
        "d": "2024-02-30T00:00:00Z",
        "b@odata.type": "Edm.Binary",
        "b": "not base64!",
        "f@odata.type": "Edm.Double",
        "f": True,
    }
    for text in ("i ne 12L", "d ne datetime'2024-01-01T00:00:00Z'", "b ne X'00'", "f ne 1"):
        assert not matches(text, broken), text


def test_code_inside_a_string_literal_is_only_text():
    f = parse_filter("PartitionKey eq '__import__(''os'').system(''x'')'")
    assert f.matches({"PartitionKey": "__import__('os').system('x')"})
    assert not f.matches(ENTITY)


def test_matching_never_reparses(monkeypatch):
    f = parse_filter("PartitionKey eq 'CANDIDATE' and not (age lt 5 or when gt datetime'2030-01-01T00:00:00Z')")
    monkeypatch.setattr(odatafilter, "_PARSER", None)
    assert f.matches(ENTITY)
    assert not f.matches({**ENTITY, "age": 4})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "PartitionKey xq 'a'",
            "invalid filter at position 14: unexpected 'xq' (expected a comparison operator: eq ne gt ge lt le)",
        ),
        ("RowKey eq 'abc", "invalid filter at position 11: unterminated quoted literal (expected a literal value)"),
        ("age eq", "invalid filter at position 7: unexpected end of filter (expected a literal value)"),
        ("age eq 5 & x", "invalid filter at position 10: unexpected '&' (expected ')', 'and' or 'or')"),
        ("age eq True", "invalid filter at position 8: unexpected 'True' (expected a literal value)"),
        ("'a' eq 'b'", "invalid filter at position 8: unexpected \"'b'\" (expected a property name)"),
        ("", "invalid filter at position 1: the filter is empty"),
        (" \t\n", "invalid filter at position 1: the filter is empty"),
    ],
)
def test_syntax_errors_name_the_position(text, message):
    assert refusal(text) == message


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("PartitionKey == 'a'", 14),
        ("PartitionKey EQ 'a'", 14),
        ("age eq 5 AND age eq 5", 10),
        ("age eq 5 age eq 5", 10),
        ("age eq 5)", 9),
        ("(age eq 5", 10),
        ("age eq 5 and", 13),
        ("age eq 5 or or age eq 5", 13),
        ("age eq 'x' trailing", 12),
        ("age eq 1.5.3", 11),
        ("5x eq age", 1),
        ("age eq age", 8),
        ("1 eq 2", 6),
        ("age", 4),
        ("not", 4),
        ("()", 2),
        ("when eq datetime'2024-01-02", 9),
        ("a eq 'line\nbreak", 6),
        ("__import__('os')", 11),
        ("__import__('os').system('rm -rf /')", 11),
        ("PartitionKey eq __import__('os')", 17),
        ("age eq 5; import os", 9),
        ("lambda: True", 7),
        ("or eq 1", 1),
        ("age eq 5 and true eq false", 22),
    ],
)
def test_bad_syntax_is_refused_at_its_position(text, position):
    assert f"position {position}:" in refusal(text)


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        ("datetime'2024-13-45'", "is not a valid DateTime"),
        ("datetime'2024-13-02T00:00:00Z'", "is not a valid DateTime"),
        ("datetime'2023-02-29T00:00:00Z'", "is not a valid DateTime"),
        ("datetime'2024-01-02T24:00:00Z'", "is not a valid DateTime"),
        ("datetime'2024-01-02T03:04:05.12345678Z'", "is not a valid DateTime"),
        ("datetime'2024-01-02T03:04:05+25:00'", "is not a valid DateTime"),
        ("datetime''", "is not a valid DateTime"),
        ("guid'xyz'", "is not a valid Guid"),
        ("guid'c9da6455-213d-42c9-9a79-3e9149a5783'", "is not a valid Guid"),
        ("2147483648", "outside the Int32 range"),
        ("-2147483649", "outside the Int32 range"),
        ("9223372036854775808L", "outside the Int64 range"),
        ("-9223372036854775809l", "outside the Int64 range"),
        ("1.5L", "is not a valid Int64"),
        ("1e400", "outside the Double range"),
        # int() refuses more than 4,300 digits with a ValueError: such a literal is one refusal too.
        ("9" * 5000, "outside the Int32 range"),
        ("-" + "1" * 5000 + "L", "outside the Int64 range"),
        ("0" * 4990 + "42", None),
        ("X'0'", "is not valid binary"),
        ("X'zz'", "is not valid binary"),
        ("binary'0a 0b'", "is not valid binary"),
    ],
)
def test_invalid_literals_are_refused_at_their_position(literal, reason):
    if reason is None:  # leading zeros: a long spelling of a small number is no refusal
        assert matches(f"x eq {literal}", {"x": 42})
        return
    message = refusal(f"age eq 1 or x eq {literal}")
    assert message.startswith("invalid filter at position 18: ")
    assert reason in message
    assert refusal(f"{literal} eq x").startswith("invalid filter at position 1: ")


def test_literal_range_edges_are_accepted():
    assert matches("x eq 2147483647 and y eq -2147483648", {"x": 2147483647, "y": -2147483648})
    parse_filter("x eq 9223372036854775807L or x eq -9223372036854775808l")
    parse_filter("x eq datetime'2024-02-29T23:59:59.9999999+14:00' or x eq datetime'1601-01-01T00:00:00Z'")
    parse_filter("x eq datetime'9999-12-31T23:59:59.9999999Z' or x eq datetime'1601-01-01T01:00:00+01:00'")


@pytest.mark.parametrize(
    "literal",
    [
        "datetime'1600-12-31T23:59:59.9999999Z'",
        "datetime'0001-01-01T00:00:00Z'",
        "datetime'1601-01-01T00:30:00+01:00'",  # 1600-12-31T23:30Z
        "datetime'9999-12-31T23:00:00-01:00'",  # 10000-01-01T00:00Z
    ],
)
def test_datetimes_outside_the_services_range_are_refused(literal):
    # The service's DateTime range is 1601-01-01 to 9999-12-31 UTC (its data model documentation).
    assert "outside the Table service's DateTime range" in refusal(f"x eq {literal}")


def test_at_most_15_comparisons():
    fifteen = " or ".join(f"age eq {n}" for n in range(1, 16))
    assert matches(fifteen)
    message = refusal(fifteen + " or (age eq 16)")
    assert message.startswith(f"invalid filter at position {len(fifteen) + 10}: more than 15 comparisons")
    assert "at most 15 discrete comparisons in one $filter" in message
    refusal("not (" + " and ".join(["age eq 5"] * 16) + ")")


def test_length_is_limited_to_10000_characters():
    clause = "age eq 5"
    longest = clause + " " * (10_000 - len(clause))
    assert matches(longest)
    assert refusal(longest + " ").startswith("invalid filter at position 10001: the filter is longer than 10,000")


def test_nesting_is_limited_to_100_levels():
    assert matches("(" * 100 + "age eq 5" + ")" * 100)
    assert matches("not " * 98 + "(age eq 5)")  # an even number of nots around a group
    assert matches("not (" * 50 + "age eq 5" + ")" * 50)
    # Depth is counted from the innermost comparison out: the 101st level is the one refused.
    assert refusal("(" * 101 + "age eq 5" + ")" * 101).startswith("invalid filter at position 1: ")
    assert "more than 100 levels" in refusal("(" * 150 + "age eq 5" + ")" * 150)
    assert refusal("not " * 100 + "(age eq 5)").startswith("invalid filter at position 1: ")
    assert "more than 100 levels" in refusal("(not " * 60 + "(age eq 5)" + ")" * 60)


def test_long_flat_chains_are_not_nesting():
    assert matches(" and ".join(["age eq 5"] * 15))
    assert matches(" or ".join(["age eq 6"] * 14 + ["age eq 5"]))


def test_non_text_is_refused():
    with pytest.raises(InvalidInput, match="must be text"):
        parse_filter(None)  # type: ignore[arg-type]

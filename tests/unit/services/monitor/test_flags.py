"""Flag parsing and the checks that need no Redis (dictionary/d_sae checks: integration)."""

from __future__ import annotations

import pytest

from featurewatch.errors import FlagError
from featurewatch.services.monitor.flags import Flag, check_flag, parse_flag, read_flags_file

GOOD = {"dictionary": "d1", "feature": 7, "name": "DNA", "severity": "critical",
        "min_activation": 0.5, "runbook_url": "https://runbooks.example/dna"}


def test_parse_flag_round_trips_through_json():
    flag = parse_flag(GOOD)
    assert flag == Flag("d1", 7, "DNA", "critical", 0.5, "https://runbooks.example/dna")
    assert Flag.from_json(flag.to_json()) == flag


def test_defaults_for_optional_fields():
    flag = parse_flag({"dictionary": "d1", "feature": 0, "name": " x "})
    assert (flag.severity, flag.min_activation, flag.runbook_url, flag.name) == (
        "warning", 0.0, "", "x")


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"feature": -1}, "feature", "must be an integer >= 0"),
    ({"feature": "7"}, "feature", "must be an integer >= 0"),
    ({"feature": True}, "feature", "must be an integer >= 0"),
    ({"name": ""}, "name", "1..200 characters"),
    ({"severity": "page"}, "severity", "must be one of"),
    ({"min_activation": -0.1}, "min_activation", "finite number >= 0"),
    ({"min_activation": float("nan")}, "min_activation", "finite number >= 0"),
    ({"runbook_url": "ftp://x"}, "runbook_url", "http"),
    ({"dictionary": " "}, "dictionary", "non-empty"),
])
def test_bad_fields_are_named(change, field, message):
    with pytest.raises(FlagError, match=message) as info:
        parse_flag({**GOOD, **change}, "flags[0]: ")
    assert info.value.field == field
    assert str(info.value).startswith("flags[0]: ")


def test_unknown_and_missing_keys():
    with pytest.raises(FlagError, match=r"unknown field\(s\) \['labels'\]"):
        parse_flag({**GOOD, "labels": {}})
    with pytest.raises(FlagError, match="missing field 'name'"):
        parse_flag({"dictionary": "d1", "feature": 1})


def test_check_flag_resolves_empty_severity():
    assert check_flag(Flag("d1", 1, "n", severity="")).severity == "warning"


def test_read_flags_file(tmp_path):
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  - {dictionary: d1, feature: 3, name: a}\n"
                    "  - {dictionary: d1, feature: 4, name: b, severity: info}\n")
    assert [f.feature for f in read_flags_file(path)] == [3, 4]


@pytest.mark.parametrize(("text", "message"), [
    ("flags: {}\n", "needs a top-level 'flags:' list"),
    ("- a\n", "needs a top-level 'flags:' list"),
    ("flags: [\n", "not valid YAML"),
    ("flags:\n  - {dictionary: d1, feature: 3, name: a}\n  - {dictionary: d1, feature: 3, "
     "name: b}\n", r"flags\[1\]: feature 3 of 'd1' is flagged twice"),
    ("flags:\n  - {dictionary: d1, feature: 3}\n", r"flags\[0\]: missing field 'name'"),
])
def test_bad_files_name_file_and_entry(tmp_path, text, message):
    path = tmp_path / "flags.yaml"
    path.write_text(text)
    with pytest.raises(FlagError, match=message) as info:
        read_flags_file(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FlagError, match="does not exist"):
        read_flags_file(tmp_path / "nope.yaml")

"""The DICOM JSON made from a header's bytes without ``dcmread``
(``transforms/reading/json_reader.py``) is the very line ``dicom_json.draft`` makes from
pydicom's dataset, on every file bundled with pydicom and on a generated archive, plain
and de-identified; and it really is the way most files go."""

from __future__ import annotations

import dataclasses
import os
import random
from types import SimpleNamespace

import pytest

import transforms.reading.dicom_json as dicom_json
import transforms.reading.extract as extract
import transforms.reading.json_reader as json_reader
import transforms.reading.json_values as json_values
from benchmarks.make_archive import generate
from tests.test_json_values import PYDICOM_FILES, json_lines
from transforms.content.settings import ContentSettings, RowContent
from transforms.reading.extract import ExtractHeaders
from transforms.reading.flatten import FlattenSettings

SETTINGS = {
    "default": FlattenSettings(dicom_json=True),
    "binary-0": FlattenSettings(dicom_json=True, max_binary_bytes=0),
    "binary-1m": FlattenSettings(dicom_json=True, max_binary_bytes=1 << 20),
}


def three_ways(paths, settings, monkeypatch, content=None) -> int:
    """Assert the lines of json_reader, of the pydicom walk and of pydicom's conversion
    of every element are the same; the number of files json_reader made."""
    made = []

    def read(*args):
        json_draft = json_reader.header_draft(*args)
        made.append(json_draft is not None)
        return json_draft

    def lines():
        if content is None:
            return json_lines(paths, settings)
        extractor = ExtractHeaders(settings, content=content)
        extractor.setup()
        return {path: _line(extractor, path) for path in paths}

    with monkeypatch.context() as patch:
        patch.setattr(extract, "header_draft", read)
        reader = lines()
    with monkeypatch.context() as patch:
        patch.setattr(extract, "header_draft", lambda *args: None)
        walk = lines()
    with monkeypatch.context() as patch:
        patch.setattr(dicom_json, "supported", lambda: False)
        patch.setattr(json_reader, "supported", lambda: False)
        reference = lines()
    for path in paths:
        assert reader[path] == walk[path] == reference[path], path
    return sum(made)


def _line(extractor, path):
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
    from transforms.common.rows import JSON_COLUMN, Row  # pylint: disable=import-outside-toplevel
    metadata = FileSystems.match([path])[0].metadata_list[0]
    result = next(iter(extractor.process([metadata])))
    return (result.values.get(JSON_COLUMN) if isinstance(result, Row)
            else (result.tag, result.value))


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_pydicom_test_files(settings, monkeypatch):
    # Most files the lean reader reads take this way (one that declines all would pass).
    assert three_ways(PYDICOM_FILES, settings, monkeypatch) > 60


def test_benchmark_archive_goes_this_way(tmp_path, monkeypatch):
    # RT Structure Sets and Plans (undefined-length sequences), enhanced MR, non-ASCII
    # text: every generated file's JSON is made from its bytes.
    generate(str(tmp_path), 60, small=True, seed=7)
    paths = sorted(os.path.join(folder, name)
                   for folder, _, names in os.walk(tmp_path) for name in names)
    for settings in SETTINGS.values():
        assert three_ways(paths, settings, monkeypatch) == len(paths)


def test_deidentified_lines_are_the_same(monkeypatch):
    options = SimpleNamespace(tags=None, exclude_tags=None, deidentify=True,
                              retain_safe_private=None, pseudonym_key_file=None,
                              pseudonymize_paths=False, csv_formula_guard=False)
    content = RowContent(ContentSettings.from_options(options, key=b"k" * 32))
    settings = FlattenSettings(dicom_json=True)
    assert three_ways(PYDICOM_FILES, settings, monkeypatch, content) > 60


def test_left_to_the_pydicom_walk():
    settings = FlattenSettings(dicom_json=True)
    header = open(PYDICOM_FILES[0], "rb").read()  # pylint: disable=consider-using-with
    for other in (dataclasses.replace(settings, include_private=True),
                  dataclasses.replace(settings, selection=object())):
        assert json_reader.header_draft(header, other) is None
    assert json_reader.header_draft(b"\0" * 140, settings) is None  # no File Meta


def test_numbers_as_written_are_the_encoders_text():
    # The DS/IS text put into the JSON as it is equals Python's repr of its number,
    # which the encoder writes; the rest goes the json_values way.
    texts = [b"-176.80", b"100.00", b"0.0", b"-0.0", b"0.0001", b"1234567.12345678",
             b"60.37\\-171.03\\-100.0", b"7.50", b"5.000000000000 ", b"1.5\\2.0000000000"]
    for text in texts:
        written = json_values.numbers_as_written("DS", text)
        assert written is not None, text
        assert written.decode().split("\\") == [repr(float(v)) for v in text.split(b"\\")]
    for text in (b"0.00001", b"1e5", b"+1.5", b".5", b"12", b"007.5", b"1.5 \\2",
                 b"12345678.5", b"1.123456789", b"100\\1.5", b"1.50\n", b"1.5\\"):
        assert json_values.numbers_as_written("DS", text) is None, text
    assert json_values.numbers_as_written("IS", b"-12\\0\\7 ") == b"-12\\0\\7"
    for text in (b"-0", b"007", b"+1", b"1234567890123456", b"1\\"):
        assert json_values.numbers_as_written("IS", text) is None, text


def test_numbers_as_written_on_random_text():
    # Against the plain definition, value by value: accepted exactly when every value
    # is a decimal of at most 15 significant digits that repr writes in fixed notation
    # (after its fraction's trailing zeros), and then written as repr writes it.
    rng = random.Random(5)

    def value():
        return "".join([rng.choice(["", "", "-", "+"]),
                        "".join(rng.choice("0000123456789") for _ in range(rng.randint(0, 9))),
                        rng.choice([".", ".", ".", "", "e"]),
                        "".join(rng.choice("0000000123456789") for _ in range(rng.randint(0, 12)))])

    def plain(text, bare_point):
        values = text.split("\\")
        kept = []
        for item in values:
            whole, dot, fraction = item.partition(".")
            if dot and not fraction and bare_point:
                fraction = "0"
            fraction = fraction.rstrip("0") or fraction[:1]
            digits = whole.lstrip("-")
            if (not dot or not digits.isdigit() or not fraction.isdigit()
                    or item.count("-") > (1 if item.startswith("-") else 0)
                    or len(digits) > 1 and digits[0] == "0"
                    or len(digits.lstrip("0") + fraction) > 15 or len(digits) > 7
                    or len(fraction) > 8):
                return None
            number = float(item)
            if number and abs(number) < 1e-4:
                return None
            kept.append(repr(number))
        return ",".join(kept)

    accepted = 0
    for _ in range(20000):
        text = "\\".join(value() for _ in range(rng.randint(1, 3)))
        written = json_values.numbers_as_written("DS", text.encode())
        # A value with a bare point ("25.") may go either way: its number's text is
        # the same (the stripped "25.0" is written as it is, the rest by json_values).
        expected = {plain(text, False), plain(text, True)}
        assert (None if written is None else written.replace(b"\\", b",").decode()) \
            in expected, text
        accepted += written is not None
    assert accepted > 1000  # the random texts reach both ways

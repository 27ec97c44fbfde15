"""The DICOM JSON made from elements' bytes (``transforms/reading/json_values.py``) is
exactly the one pydicom's conversion gives (``DataElement.to_json_dict``), on every file
bundled with pydicom and on a generated benchmark archive, for several settings: the
whole ``--format json`` line of each file, de-identified or not, is compared."""

from __future__ import annotations

import dataclasses
import os

import pydicom.data
import pytest
from apache_beam.io.filesystems import FileSystems

import transforms.reading.dicom_json as dicom_json
import transforms.reading.extract as extract
import transforms.reading.json_reader as json_reader
import transforms.reading.json_values as json_values
from benchmarks.make_archive import generate
from transforms.common.rows import JSON_COLUMN, Row
from transforms.reading.extract import ExtractHeaders
from transforms.reading.flatten import FlattenSettings

DATA = os.path.dirname(pydicom.data.__file__)
PYDICOM_FILES = sorted(
    os.path.join(DATA, folder, name)
    for folder in ("test_files", "charset_files")
    for name in os.listdir(os.path.join(DATA, folder))
    if os.path.isfile(os.path.join(DATA, folder, name))
)
SETTINGS = {
    "default": FlattenSettings(dicom_json=True),
    "private": FlattenSettings(dicom_json=True, include_private=True),
    "binary-1k": FlattenSettings(dicom_json=True, include_private=True, max_binary_bytes=1024),
}


def json_lines(paths, settings) -> dict:
    """Each file's JSON line (or its error/skip record) as the pipeline's extraction makes it."""
    extract = ExtractHeaders(settings)
    extract.setup()
    lines = {}
    for path in paths:
        metadata = FileSystems.match([path])[0].metadata_list[0]
        result = next(iter(extract.process([metadata])))
        lines[path] = (result.values.get(JSON_COLUMN) if isinstance(result, Row)
                       else (result.tag, result.value))
    return lines


def check_same(paths, settings, monkeypatch) -> int:
    """Assert both ways give the same lines; the number of elements made from bytes."""
    made = []

    def counted(*args):
        element = json_values.element_json(*args)
        made.append(element is not None)
        return element

    def read(*args):  # json_reader's drafts: every element made from the bytes
        json_draft = json_reader.header_draft(*args)
        made.extend(True for _ in (json_draft.entries if json_draft is not None else ()))
        return json_draft

    with monkeypatch.context() as patch:
        patch.setattr(dicom_json, "element_json", counted)
        patch.setattr(extract, "header_draft", read)
        fast = json_lines(paths, settings)
    with monkeypatch.context() as patch:
        patch.setattr(dicom_json, "supported", lambda: False)
        patch.setattr(json_reader, "supported", lambda: False)
        reference = json_lines(paths, settings)
    for path in paths:
        assert fast[path] == reference[path], path
    return sum(made)


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_pydicom_test_files(settings, monkeypatch):
    # Most elements really take the fast path (one that declines all would pass).
    assert check_same(PYDICOM_FILES, settings, monkeypatch) > 5000


def test_benchmark_archive(tmp_path, monkeypatch):
    generate(str(tmp_path), 60, small=True, seed=5)
    paths = sorted(os.path.join(folder, name)
                   for folder, _, names in os.walk(tmp_path) for name in names)
    for settings in SETTINGS.values():
        assert check_same(paths, settings, monkeypatch) > 60 * 50


def test_pydicom_configuration_other_than_defaults_is_left_to_pydicom(monkeypatch):
    assert json_values.supported()
    monkeypatch.setattr(pydicom.config, "use_DS_decimal", True)
    assert not json_values.supported()


def test_settings_are_all_known():
    # A new FlattenSettings field that changes the JSON must be thought about here.
    assert {field.name for field in dataclasses.fields(FlattenSettings)} >= {"dicom_json"}


def outcomes(paths, settings) -> dict:
    extract = ExtractHeaders(settings)
    extract.setup()
    found = {}
    for path in paths:
        metadata = FileSystems.match([path])[0].metadata_list[0]
        result = next(iter(extract.process([metadata])))
        if isinstance(result, Row):
            values = {k: v for k, v in result.values.items() if k != JSON_COLUMN}
            found[path] = ("row", values, {k: v for k, v in result.vrs.items() if k != JSON_COLUMN})
        else:
            found[path] = (result.tag, result.value)
    return found


@pytest.mark.parametrize("private", [False, True], ids=["default", "private"])
def test_json_changes_no_row_error_or_skip(private):
    # With --format json the lean reader still makes the row and pydicom reads the
    # header from memory: every file gives the row, error or skip it gives without.
    plain = FlattenSettings(include_private=private)
    with_json = dataclasses.replace(plain, dicom_json=True)
    assert outcomes(PYDICOM_FILES, with_json) == outcomes(PYDICOM_FILES, plain)

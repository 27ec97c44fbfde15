"""The lean header reader gives exactly the pydicom path's outcome (row, error or skip)
on every file bundled with pydicom and on a generated benchmark archive, for several
settings; whatever it declines is read by pydicom, and the summary counts both."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import pydicom.data
import pytest
from apache_beam.io.filesystems import FileSystems
from pydicom import dcmread

import transforms.reading.header_reader as header_reader
from beam_pipeline import cli
from benchmarks.make_archive import generate
from transforms.reading.extract import ExtractHeaders
from transforms.common.rows import Row
from transforms.reading.flatten import FlattenSettings, flatten
from transforms.reading.header_reader import HeaderReader, settings_supported

DATA = os.path.dirname(pydicom.data.__file__)
PYDICOM_FILES = sorted(
    os.path.join(DATA, folder, name)
    for folder in ("test_files", "charset_files")
    for name in os.listdir(os.path.join(DATA, folder))
    if os.path.isfile(os.path.join(DATA, folder, name))
)
SETTINGS = {
    "default": FlattenSettings(),
    "private": FlattenSettings(include_private=True),
    "private-all-items-hex": FlattenSettings(
        include_private=True, max_sequence_items=0, max_binary_bytes=1024
    ),
    "items-1": FlattenSettings(max_sequence_items=1),
    "private-items-2": FlattenSettings(include_private=True, max_sequence_items=2),
    "binary-8k": FlattenSettings(max_binary_bytes=8192),
}


def outcome(path: str, settings: FlattenSettings, lean: bool):
    """(outcome, read by the lean reader?) of the pipeline's extraction of one file."""
    extract = ExtractHeaders(settings, lean=lean)
    extract.setup()
    metadata = FileSystems.match([path])[0].metadata_list[0]
    result, counts = extract.process([metadata])
    return result, counts.value[0] == 1


def comparable(result):
    if isinstance(result, Row):
        return ("row", result.path, result.values, result.vrs)
    return (result.tag, result.value)


def check_same(path: str, settings: FlattenSettings) -> bool:
    """Assert the lean outcome equals the pydicom path's; True if the lean reader read it."""
    lean, used_lean = outcome(path, settings, lean=True)
    pydicom_path, _ = outcome(path, settings, lean=False)
    assert comparable(lean) == comparable(pydicom_path)
    if used_lean:
        # pydicom's converted values too (the reference path), for rows the lean reader made.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = dcmread(path, stop_before_pixels=True)
        reference, _ = flatten(dataset, path, settings, reference=True)
        assert (lean.values, lean.vrs) == (reference.values, reference.vrs)
    return used_lean


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    generate(str(root), 90, small=True, seed=3)
    return sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
    )


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_pydicom_test_files(settings):
    read_lean = [path for path in PYDICOM_FILES if check_same(path, settings)]
    # The reader must really read most of them (a reader that declines all would pass).
    assert len(read_lean) >= 60, len(read_lean)


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_benchmark_archive(archive, settings):
    read_lean = [path for path in archive if check_same(path, settings)]
    assert len(read_lean) == len(archive)  # every generated file is plain LE


def test_archive_has_long_nested_headers(archive):
    kinds = set()
    for path in archive:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = dcmread(path, stop_before_pixels=True)
        kinds.add(dataset.Modality)
        if "PerFrameFunctionalGroupsSequence" in dataset:
            kinds.add("multi-frame")
    assert {"MR", "RTPLAN", "RTSTRUCT", "multi-frame"} <= kinds


def _lean_handled(paths):
    return [path for path in paths if outcome(path, FlattenSettings(), lean=True)[1]]


def test_truncated_files_are_errors_as_before(tmp_path, archive):
    """Cut a file anywhere: the outcome (row or the exact error) is still pydicom's."""
    sources = _lean_handled(PYDICOM_FILES)[:6] + archive[:: max(1, len(archive) // 4)]
    for source in sources:
        with open(source, "rb") as stream:
            data = stream.read()
        for cut in sorted({140, 200, 333, len(data) // 3, len(data) // 2, len(data) - 1}):
            if cut >= len(data):
                continue
            path = tmp_path / f"cut-{cut}-{os.path.basename(source)}"
            path.write_bytes(data[:cut])
            check_same(str(path), FlattenSettings())


def test_declines_settings_it_does_not_know(monkeypatch):
    assert settings_supported(FlattenSettings())
    # Another engineer adds a field to FlattenSettings: the reader must step aside.
    monkeypatch.setattr(header_reader, "SUPPORTED_SETTINGS",
                        header_reader.SUPPORTED_SETTINGS - {"max_binary_bytes"})
    assert not settings_supported(FlattenSettings())
    assert not HeaderReader(FlattenSettings()).enabled
    Extended = dataclasses.make_dataclass(  # pylint: disable=invalid-name
        "Extended", [("tags", tuple, ())], bases=(FlattenSettings,), frozen=True
    )
    monkeypatch.undo()
    assert not settings_supported(Extended())
    path = next(p for p in PYDICOM_FILES if p.endswith("CT_small.dcm"))
    result, used_lean = outcome(path, Extended(), lean=True)
    assert isinstance(result, Row) and not used_lean


def test_summary_counts_lean_rows_and_fallbacks(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("CT_small.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "no_meta.dcm"):
        (inputs / name).write_bytes(open(os.path.join(DATA, "test_files", name), "rb").read())
    (inputs / "notes.txt").write_text("not DICOM")
    out = tmp_path / "scan.csv"
    assert cli.main([str(inputs), "-o", str(out), "--quiet"]) == 0
    summary = json.loads((tmp_path / "scan.summary.json").read_text())
    assert summary["lean_reader_rows"] == 2  # CT_small, rtplan
    assert summary["lean_reader_fallbacks"] == 1  # big endian (no_meta.dcm: not DICOM)
    assert summary["rows"] == 3 and summary["errors"] == 1 and summary["non_dicom_skipped"] == 1

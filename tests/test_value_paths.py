"""The fast value path (raw bytes) and the reference path (pydicom's converted values)
give the same row for every file bundled with pydicom."""

from __future__ import annotations

import os
import warnings

import pydicom.data
import pytest
from apache_beam.io.filesystems import FileSystems
from pydicom import dcmread

from transforms.reading.extract import ExtractHeaders
from transforms.common.rows import Row
from transforms.reading.flatten import FlattenSettings, flatten

DATA = os.path.dirname(pydicom.data.__file__)
FILES = sorted(
    os.path.join(DATA, folder, name)
    for folder in ("test_files", "charset_files")
    for name in os.listdir(os.path.join(DATA, folder))
    if os.path.isfile(os.path.join(DATA, folder, name)) and not name.endswith((".py", ".txt"))
)
SETTINGS = [
    FlattenSettings(),
    FlattenSettings(include_private=True, max_sequence_items=0, max_binary_bytes=1024),
]


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path, stop_before_pixels=True, force=True)


def extract_one(path, settings=FlattenSettings(), lean=False):
    """The pipeline's own extraction of one file: a Row, or a tagged error / skip.

    ``lean=False``: the pydicom path only (the lean header reader has its own test)."""
    extract = ExtractHeaders(settings, lean=lean)
    extract.setup()
    metadata = FileSystems.match([path])[0].metadata_list[0]
    outcome, counts = extract.process([metadata])
    assert counts.tag == "reader_counts"
    return outcome


# pydicom's deliberately broken files, which the pipeline reports instead of reading.
NOT_ROWS = {
    "no_meta.dcm": "errors",  # a stray byte before the first element
    "rtplan_truncated.dcm": "errors",
    "README.txt": "skipped", "crayons.icc": "skipped", "rtplan.dump": "skipped",
    "rtstruct.dump": "skipped", "test1.json": "skipped", "test_PN.json": "skipped",
    # A gzip file goes to the archive steps, which skip it: it holds no tar.
    "zipMR.gz": "archives", "FileInfo.txt": "skipped",
}


def test_there_are_files():
    assert len(FILES) > 90


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "private-all"])
@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_fast_path_matches_reference(path, settings):
    fast = extract_one(path, settings)
    name = os.path.basename(path)
    if name in NOT_ROWS:
        assert not isinstance(fast, Row) and fast.tag == NOT_ROWS[name]
        return
    assert isinstance(fast, Row), fast
    reference, _ = flatten(_read(path), path, settings, reference=True)
    differences = {
        name: (fast.values.get(name), reference.values.get(name))
        for name in fast.values.keys() | reference.values.keys()
        if fast.values.get(name) != reference.values.get(name)
    }
    assert not differences
    assert fast.vrs == reference.vrs

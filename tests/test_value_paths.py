"""The fast value path (raw bytes) and the reference path (pydicom's converted values)
give the same row for every file bundled with pydicom."""

from __future__ import annotations

import os
import warnings

import pydicom.data
import pytest
from pydicom import dcmread

from transforms.extract import ExtractHeaders
from transforms.flatten import FlattenSettings, Row, flatten

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


def _rows(path, settings):
    """(row from the pipeline's own extraction, row from the reference path)."""
    extract = ExtractHeaders(settings)
    extract.setup()
    try:
        fast = extract._read(path)  # pylint: disable=protected-access
    except Exception as exc:  # pylint: disable=broad-except
        pytest.skip(f"the pipeline reports it as an error: {exc}")
    if not isinstance(fast, Row):
        pytest.skip("the pipeline skips it as not DICOM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, _ = flatten(_read(path), path, settings, reference=True)
    return fast, reference


def test_there_are_files():
    assert len(FILES) > 90


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "private-all"])
@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_fast_path_matches_reference(path, settings):
    fast, reference = _rows(path, settings)
    differences = {
        name: (fast.values.get(name), reference.values.get(name))
        for name in fast.values.keys() | reference.values.keys()
        if fast.values.get(name) != reference.values.get(name)
    }
    assert not differences
    assert fast.vrs == reference.vrs

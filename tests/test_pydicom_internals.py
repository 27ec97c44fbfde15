"""The one adapter to pydicom's internals (transforms/common/pydicom_internals.py): these
fail loudly when a pydicom release changes what it relies on."""

from __future__ import annotations

import inspect
import io
import struct
import warnings

import pydicom.filereader as filereader

from transforms.common.pydicom_internals import item_is_implicit_vr

EXPLICIT_ELEMENT = struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 4) + b"T123"
IMPLICIT_ELEMENT = struct.pack("<HHL", 0x0008, 0x0100, 4) + b"T123"


def test_pydicom_still_decides_an_items_encoding_with_is_implicit_vr():
    parameters = list(inspect.signature(filereader._is_implicit_vr).parameters)
    assert parameters == ["fp", "implicit_vr_is_assumed", "is_little_endian", "stop_when",
                          "is_sequence"]
    # read_dataset (which reads every item) asks it, so the adapter answers as pydicom reads.
    source = inspect.getsource(filereader.read_dataset)
    assert "_is_implicit_vr(" in source and "is_sequence" in source


def test_an_item_in_explicit_vr_may_switch_to_implicit_never_back():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an item's switch is allowed: no warning
        assert item_is_implicit_vr(io.BytesIO(EXPLICIT_ELEMENT), False, True) is False
        assert item_is_implicit_vr(io.BytesIO(IMPLICIT_ELEMENT), False, True) is True
        assert item_is_implicit_vr(io.BytesIO(EXPLICIT_ELEMENT), True, True) is True
        assert item_is_implicit_vr(io.BytesIO(b""), False, True) is False  # an empty item


def test_the_adapter_agrees_with_pydicom_reading_a_sequence():
    """A dataset in explicit VR whose item is in implicit VR reads the same through pydicom."""
    from pydicom.filebase import DicomBytesIO

    item = IMPLICIT_ELEMENT
    sequence = struct.pack("<HHL", 0xFFFE, 0xE000, len(item)) + item
    element = struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, len(sequence)) + sequence
    dataset = filereader.read_dataset(DicomBytesIO(element), False, True)
    assert str(dataset[0x00081140].value[0][0x00080100].value) == "T123"
    assert item_is_implicit_vr(io.BytesIO(item), False, True) is True

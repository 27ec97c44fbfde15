"""One private-creator rule (transforms/common/private_tags.py) for the pydicom walker, the
lean reader and the tag selection: the two readers name private elements alike."""

from __future__ import annotations

import io
import warnings

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from transforms.common.private_tags import creator_tag, creator_text, is_private_creator
from transforms.reading.flatten import FlattenSettings, flatten
from transforms.reading.header_reader import HeaderReader


def test_blocks_are_reserved_by_creators_10_to_ff():
    assert creator_tag(0x00091005) == 0x00090010
    assert creator_tag(0x0009FF01) == 0x000900FF
    for outside in (0x00090001, 0x00090010, 0x00090105, 0x00090FFF):
        assert creator_tag(outside) is None, hex(outside)
    assert is_private_creator(0x00090010) and is_private_creator(0x000900FF)
    assert not is_private_creator(0x00090001) and not is_private_creator(0x00080010)


def test_creator_text_of_stored_bytes_text_and_several_values():
    assert creator_text(b"SIEMENS CSA HEADER\0") == "SIEMENS CSA HEADER"
    assert creator_text(" GEMS_IDEN_01 ") == "GEMS_IDEN_01"
    assert creator_text(["A", "B"]) == "A\\B"
    assert creator_text(b"  ") is None and creator_text(None) is None


def test_both_readers_name_an_element_outside_any_block_alike():
    """(0009,0105) lies in no block: (0009,0001) is not its creator, for either reader
    (the pydicom walker once looked it up and named the column ``[ODD] (0009,0105)``)."""
    ds = Dataset()
    ds.PatientName = "A"
    ds.add_new(0x00090001, "LO", "ODD")
    ds.add_new(0x00090010, "LO", "GOOD")
    ds.add_new(0x00090105, "LO", "x")
    ds.add_new(0x00091005, "LO", "y")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    settings = FlattenSettings(include_private=True)
    stream = io.BytesIO(data)
    lean = HeaderReader(settings).read(stream, "f", len(data), stream.read(132))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        walked, _ = flatten(dcmread(io.BytesIO(data), stop_before_pixels=True), "f", settings)
    assert lean is not None
    assert lean.values == walked.values and lean.vrs == walked.vrs
    assert walked.values["[GOOD] (0009,1005)"] == "y"
    assert walked.values["[Unknown Creator] (0009,0105)"] == "x"

"""Flattening rules on real DICOM files (pydicom's bundled ones and files we write)."""

from __future__ import annotations

import itertools

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.conftest import make_dataset, pydicom_file, write_dicom
from transforms.reading.flatten import FlattenSettings, flatten
from transforms.reading.naming import order_columns
from transforms.reading.values import join_text


def flat(path, **settings) -> dict:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    row, _ = flatten(ds, str(path), FlattenSettings(**settings))
    return row.values


def test_ct_small_values_in_dicom_form():
    values = flat(pydicom_file("CT_small.dcm"))
    assert values["Patient's Name (0010,0010)"] == "CompressedSamples^CT1"
    assert values["Image Type (0008,0008)"] == "ORIGINAL\\PRIMARY\\AXIAL"
    # DS keeps its stored text, not a float's repr.
    assert values["Slice Thickness (0018,0050)"] == "5.000000"
    assert values["Image Position (Patient) (0020,0032)"] == "-158.135803\\-179.035797\\-75.699997"
    # Binary numbers are decimal; pixel data is never read.
    assert values["Rows (0028,0010)"] == "128"
    assert not any(name.startswith("Pixel Data") for name in values)


def test_every_sequence_item_is_kept(tmp_path, sequence_dataset):
    values = flat(write_dicom(tmp_path / "seq.dcm", sequence_dataset))
    prefix = "Referenced Image Sequence (0008,1140)"
    uid = "Referenced SOP Instance UID (0008,1155)"
    assert values[f"{prefix} - {uid}"] == "1.2.3.1"
    assert values[f"{prefix} [2] - {uid}"] == "1.2.3.2"
    assert values[f"{prefix} [3] - {uid}"] == "1.2.3.3"
    assert f"{prefix} #items" not in values


def test_long_sequence_keeps_first_items_and_true_count(tmp_path, sequence_dataset):
    values = flat(write_dicom(tmp_path / "seq.dcm", sequence_dataset), max_sequence_items=2)
    prefix = "Referenced Image Sequence (0008,1140)"
    assert values[f"{prefix} [2] - Referenced SOP Instance UID (0008,1155)"] == "1.2.3.2"
    assert not any(name.startswith(f"{prefix} [3]") for name in values)
    assert values[f"{prefix} #items"] == "3"
    unlimited = flat(write_dicom(tmp_path / "seq.dcm", sequence_dataset), max_sequence_items=0)
    assert f"{prefix} [3] - Referenced SOP Instance UID (0008,1155)" in unlimited


def test_real_text_values_stay_values(tmp_path, sequence_dataset):
    values = flat(write_dicom(tmp_path / "seq.dcm", sequence_dataset))
    assert values["Patient ID (0010,0020)"] == "NONE"
    assert values["Study Description (0008,1030)"] == "N/A"
    ds = make_dataset(PatientComments="None", SeriesNumber="0", ImageComments="")
    values = flat(write_dicom(tmp_path / "zero.dcm", ds))
    assert values["Patient Comments (0010,4000)"] == "None"
    assert values["Series Number (0020,0011)"] == "0"
    assert "Image Comments (0020,4000)" not in values  # empty is absent


@pytest.mark.parametrize(
    "name, expected",
    [
        ("chrJapMulti.dcm", "やまだ^たろう"),
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrKoreanMulti.dcm", "김희중"),
        ("chrGreek.dcm", "Διονυσιος"),
        ("chrRuss.dcm", "Люкceмбypг"),
        ("chrX1.dcm", "Wang^XiaoDong=王^小東="),
    ],
)
def test_names_decoded_with_specific_character_set(name, expected):
    assert flat(pydicom_file(name))["Patient's Name (0010,0010)"] == expected


def test_character_set_applies_inside_sequences():
    values = flat(pydicom_file("chrSQEncoding.dcm"))
    assert (
        values["Requested Procedure Code Sequence (0032,1064) - Patient's Name (0010,0010)"]
        == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
    )


def test_undecodable_text_keeps_the_file(tmp_path):
    ds = make_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, but the bytes below are not
    ds.add_new(0x00100010, "PN", b"M\xfcller^Hans")
    values = flat(write_dicom(tmp_path / "bad_text.dcm", ds))
    assert values["Patient's Name (0010,0010)"].startswith("M")
    assert values["Patient's Name (0010,0010)"].endswith("ller^Hans")


def test_private_elements_only_with_include_private(tmp_path):
    ds = make_dataset(PatientName="Doe^John")
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", b"\x01\x02\x03\x04")
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    path = write_dicom(tmp_path / "private.dcm", ds)
    assert not any("SIEMENS" in name for name in flat(path))
    values = flat(path, include_private=True)
    assert values["Private Creator (0029,0010)"] == "SIEMENS CSA HEADER"
    assert values["[SIEMENS CSA HEADER] CSA Image Header Info (0029,1010)"] == "01020304"
    assert values["[SIEMENS CSA HEADER] CSA Image Header Type (0029,1008)"] == "IMAGE NUM 4"


def test_unknown_private_creator_named_by_tag(tmp_path):
    ds = make_dataset()
    block = ds.private_block(0x0041, "ACME IMAGING 1.0", create=True)
    block.add_new(0x01, "LO", "widget")
    values = flat(write_dicom(tmp_path / "acme.dcm", ds), include_private=True)
    assert values["[ACME IMAGING 1.0] (0041,1001)"] == "widget"


def test_binary_values_hex_or_size(tmp_path):
    ds = make_dataset()
    ds.add_new(0x00420011, "OB", bytes(range(16)))  # Encapsulated Document, short
    ds.add_new(0x00282000, "OB", b"\xab" * 500)  # ICC Profile, long
    values = flat(write_dicom(tmp_path / "binary.dcm", ds))
    assert values["Encapsulated Document (0042,0011)"] == bytes(range(16)).hex()
    assert values["ICC Profile (0028,2000)"] == "<500 bytes>"
    values = flat(write_dicom(tmp_path / "binary.dcm", ds), max_binary_bytes=8)
    assert values["Encapsulated Document (0042,0011)"] == "<16 bytes>"


def test_at_and_float_values(tmp_path):
    ds = make_dataset()
    ds.add_new(0x00209165, "AT", [0x00209111, 0x0020911D])  # Dimension Index Pointer
    ds.add_new(0x00189087, "FD", 1000.5)  # Diffusion b-value
    ds.add_new(0x00189219, "FL", 0.1)
    values = flat(write_dicom(tmp_path / "at.dcm", ds))
    assert values["Dimension Index Pointer (0020,9165)"] == "(0020,9111)\\(0020,911D)"
    assert values["Diffusion b-value (0018,9087)"] == "1000.5"
    assert values["Tag Angle Second Axis (0018,9219)"] == "0.1"


def test_overlays_and_pixel_groups_left_out(tmp_path):
    ds = make_dataset()
    ds.add_new(0x60000010, "US", 512)  # Overlay Rows
    ds.add_new(0x60000022, "LO", "overlay")
    values = flat(write_dicom(tmp_path / "overlay.dcm", ds))
    assert not any("(6000," in name for name in values)


def test_bad_element_keeps_raw_text(tmp_path):
    ds = make_dataset()
    ds.add_new(0x00280010, "US", 0)
    path = write_dicom(tmp_path / "bad_us.dcm", ds)
    data = bytearray(open(path, "rb").read())
    # Rows (0028,0010) US with length 2 -> declare 3 bytes of value: not a whole US.
    at = data.index(b"\x28\x00\x10\x00US\x02\x00")
    data[at + 6:at + 8] = b"\x03\x00"
    data[at + 8:at + 10] = b"AB"
    data.insert(at + 10, ord("C"))
    open(path, "wb").write(bytes(data))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    row, bad = flatten(ds, path)
    assert row.values["Rows (0028,0010)"] == "ABC"
    assert row.values["SOP Class UID (0008,0016)"] == "1.2.840.10008.5.1.4.1.1.2"
    assert bad and "Rows (0028,0010)" in bad[0]


def test_column_order_tag_order_with_nested_after_sequence():
    names = [
        "Study Date (0008,0020)",
        "Referenced Image Sequence (0008,1140) [2] - Referenced SOP Instance UID (0008,1155)",
        "Referenced Image Sequence (0008,1140) - Referenced SOP Instance UID (0008,1155)",
        "Referenced Image Sequence (0008,1140) #items",
        "Referenced Image Sequence (0008,1140) - Referenced SOP Class UID (0008,1150)",
        "Patient's Name (0010,0010)",
        "Image Type (0008,0008)",
        "DicomPath",
        "Referenced Image Sequence (0008,1140) [10] - Referenced SOP Class UID (0008,1150)",
    ]
    assert order_columns(names) == [
        "DicomPath",
        "Image Type (0008,0008)",
        "Study Date (0008,0020)",
        "Referenced Image Sequence (0008,1140) #items",
        "Referenced Image Sequence (0008,1140) - Referenced SOP Class UID (0008,1150)",
        "Referenced Image Sequence (0008,1140) - Referenced SOP Instance UID (0008,1155)",
        "Referenced Image Sequence (0008,1140) [2] - Referenced SOP Instance UID (0008,1155)",
        "Referenced Image Sequence (0008,1140) [10] - Referenced SOP Class UID (0008,1150)",
        "Patient's Name (0010,0010)",
    ]


def _nested_sequence_dataset() -> Dataset:
    inner = Dataset()
    inner.CodeValue = "T-D1100"
    inner.CodeMeaning = "Head \\ Neck"
    outer = []
    for number in (1, 2):
        item = Dataset()
        item.ReferencedSOPInstanceUID = f"1.2.3.{number}"
        item.AnatomicRegionSequence = Sequence([inner])
        outer.append(item)
    return make_dataset(ReferencedImageSequence=Sequence(outer), PixelRepresentation=0)


@pytest.mark.parametrize("undefined_length", [False, True])
def test_sequences_parsed_without_datasets_match_pydicom(tmp_path, undefined_length):
    """Defined-length sequences are walked from pydicom's element generator, not as
    pydicom Datasets (transforms.reading.flatten.parse_sequence): same text as pydicom's
    conversion, also with undefined-length items inside."""
    import transforms.reading.flatten as flatten_module

    ds = _nested_sequence_dataset()
    for item in ds.ReferencedImageSequence:
        item.is_undefined_length_sequence_item = undefined_length
    path = write_dicom(tmp_path / "nested.dcm", ds)
    raw_ds = pydicom.dcmread(path, stop_before_pixels=True)
    sequence = raw_ds.get_item(0x00081140)
    assert flatten_module.parse_sequence(sequence, False) is not None  # the fast path
    fast, _ = flatten(raw_ds, path)
    reference, _ = flatten(pydicom.dcmread(path, stop_before_pixels=True), path, reference=True)
    assert fast.values == reference.values and fast.vrs == reference.vrs
    prefix = "Referenced Image Sequence (0008,1140) [2] - Anatomic Region Sequence (0008,2218)"
    assert fast.values[f"{prefix} - Code Meaning (0008,0104)"] == "Head\\Neck"


def test_sequence_fails_with_its_datasets_pixel_representation(tmp_path):
    """Converting a sequence converts its dataset's Pixel Representation too, and a
    broken one fails the sequence: the fast path keeps that behaviour."""
    path = write_dicom(tmp_path / "bad_pixrep.dcm", _nested_sequence_dataset())
    data = bytearray(open(path, "rb").read())
    at = data.index(b"\x28\x00\x03\x01US\x02\x00")
    data[at + 6:at + 8] = b"\x03\x00"  # 3 bytes: not a whole US
    data.insert(at + 10, 0)
    open(path, "wb").write(bytes(data))
    row, bad = flatten(pydicom.dcmread(path, stop_before_pixels=True), path)
    assert row.values["Referenced Image Sequence (0008,1140)"] == "<0 bytes>"
    assert any(message.startswith("Referenced Image Sequence (0008,1140)") for message in bad)


def test_join_text_is_each_value_stripped_and_joined_again():
    """join_text's shortcuts give the rule itself on every short string of the
    characters that matter (values, padding, NUL, the separator)."""
    def rule(vr: str, text: str) -> str:
        if vr == "ST":  # a single-value VR: only trailing padding goes
            return text.rstrip(" \0")
        parts = [part.strip(" \0") for part in text.split("\\")]
        return "\\".join(parts) if any(parts) else ""

    for length in range(7):
        for chars in itertools.product("a1 \0\\.", repeat=length):
            text = "".join(chars)
            for vr in ("DS", "LO", "ST"):
                assert join_text(vr, text) == rule(vr, text), (vr, text)

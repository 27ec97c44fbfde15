"""Crafted hostile files: each one built to stress one limit of the reader."""

from __future__ import annotations

import os
import struct
import warnings

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian
from pydicom.sequence import Sequence

from tests.conftest import make_dataset, write_dicom

UID_ROOT = "1.2.826.0.1.3680043.8.498."


def deep_nesting(path, depth: int = 200) -> str:
    """Sequences nested ``depth`` levels deep, the innermost item holding a Patient ID."""
    inner = Dataset()
    inner.PatientID = "DEEPEST"
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    return write_dicom(path, make_dataset(ReferencedImageSequence=Sequence([inner])))


def long_sequence(path, items: int = 20_000) -> str:
    sequence = []
    for number in range(items):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = f"{UID_ROOT}{number}"
        sequence.append(item)
    return write_dicom(path, make_dataset(ReferencedImageSequence=Sequence(sequence)))


def functional_groups(path, frames: int = 12_000) -> str:
    """An enhanced multi-frame header: one Per-Frame Functional Groups item per frame
    (frame content, plane position, plane orientation, pixel measures)."""
    per_frame = []
    for number in range(frames):
        content = Dataset()
        content.InStackPositionNumber = number + 1
        content.DimensionIndexValues = [1, number + 1]
        position = Dataset()
        position.ImagePositionPatient = [-125.0, -125.0, -60.0 + 0.5 * number]
        orientation = Dataset()
        orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        group = Dataset()
        group.FrameContentSequence = Sequence([content])
        group.PlanePositionSequence = Sequence([position])
        group.PlaneOrientationSequence = Sequence([orientation])
        per_frame.append(group)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.5]
    measures.SliceThickness = 0.5
    shared.PixelMeasuresSequence = Sequence([measures])
    ds = make_dataset(
        NumberOfFrames=frames,
        SharedFunctionalGroupsSequence=Sequence([shared]),
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
    )
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR
    return write_dicom(path, ds)


def declared_huge_element(path, length: int = 0xFFFFFFFE) -> str:
    """A small file whose last element declares ``length`` bytes (4 GB) of UT text."""
    write_dicom(path, make_dataset(PatientName="Small^File"))
    with open(path, "ab") as out:
        out.write(struct.pack("<HH2sHL", 0x0018, 0x9410, b"UT", 0, length))  # explicit VR
        out.write(b"only a few bytes follow")
    return str(path)


def huge_text(path, characters: int = 20_000_000) -> str:
    """A 20 MB Text Value (UT)."""
    return write_dicom(path, make_dataset(TextValue="x" * (characters - 1) + "!"))


def long_array(path, values: int = 100_000) -> str:
    """100,000 values in one element, as a contour or a curve holds them: DS text in an
    implicit VR file (explicit VR limits DS to 64 KB), and 100,000 FD values, which
    pydicom writes as UN (over 64 KB)."""
    ds = make_dataset(ContourData=[f"{i % 500}.25" for i in range(values)],
                      RealWorldValueLUTData=[0.5] * values)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta = meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "VR changed from FD to UN": that is the point
        ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def preamble_only(path) -> str:
    """128 zero bytes and the DICM marker: a file cut right after its preamble."""
    with open(path, "wb") as out:
        out.write(b"\0" * 128 + b"DICM")
    return str(path)


def fifo(path) -> str:
    os.mkfifo(path)
    return str(path)


def symlink_loop(folder) -> tuple[str, str]:
    first, second = os.path.join(folder, "loop-a.dcm"), os.path.join(folder, "loop-b.dcm")
    os.symlink(second, first)
    os.symlink(first, second)
    return first, second


def _explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr in (b"SQ", b"OB", b"UN", b"UT"):
        return struct.pack("<HH2sHL", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def slow_sequence(path, items: int = 100_000) -> str:
    """A header that takes seconds to walk (a sequence of ``items`` items), built from
    bytes so that making it is fast: the file to trip the time limit."""
    item_body = (_explicit(0x0008, 0x1150, b"UI", b"1.2.840.10008.5.1.4.1.1.2")
                 + _explicit(0x0008, 0x1155, b"UI", UID_ROOT.encode() + b"1"))
    item = struct.pack("<HHL", 0xFFFE, 0xE000, len(item_body)) + item_body
    write_dicom(path, make_dataset(PatientName="Slow^Sequence"))
    with open(path, "ab") as out:
        out.write(_explicit(0x0008, 0x1140, b"SQ", item * items))
    return str(path)

"""Real files packed by the tests: a folder of DICOM (and not-DICOM) files, and the same
folder as zip (stored, deflated), tar, tar.gz, tar.bz2 and tar.xz archives."""

from __future__ import annotations

import os
import tarfile
import zipfile

import numpy as np

from conftest import build_sequence_dataset, copy_pydicom_file, make_dataset, write_dicom

PACKED = {
    # archive name -> how it is written
    "stored.zip": ("zip", zipfile.ZIP_STORED),
    "deflated.zip": ("zip", zipfile.ZIP_DEFLATED),
    "bzip2.zip": ("zip", zipfile.ZIP_BZIP2),
    "plain.tar": ("tar", "w"),
    "gzip.tar.gz": ("tar", "w:gz"),
    "bzip2.tbz2": ("tar", "w:bz2"),
    "xz.tar.xz": ("tar", "w:xz"),
    "zip-named.dat": ("zip", zipfile.ZIP_DEFLATED),  # recognised by its bytes
}


def ct_slice(path, size=256) -> str:
    ds = make_dataset(PatientName="Big^Slice", PatientID="CT", ImageType=["ORIGINAL", "PRIMARY"])
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.arange(size * size, dtype="<i2").tobytes()
    return write_dicom(path, ds)


def make_source(root) -> str:
    """A folder of files to pack; returns its path."""
    root = str(root)
    copy_pydicom_file("CT_small.dcm", os.path.join(root, "series1"))
    copy_pydicom_file("MR_small.dcm", os.path.join(root, "series1"), "IM0002")
    copy_pydicom_file("ExplVR_BigEndNoMeta.dcm", os.path.join(root, "series2"))
    copy_pydicom_file("chrJapMulti.dcm", os.path.join(root, "series2"))
    write_dicom(os.path.join(root, "series3", "seq.dcm"), build_sequence_dataset())
    write_dicom(os.path.join(root, "series3", "raw"), part10=False, PatientName="Raw^Set")
    # A header longer than the first reads: its text is read back after a seek.
    write_dicom(os.path.join(root, "series3", "long.dcm"), PatientID="LONG",
                TextValue="x" * 40000)
    ct_slice(os.path.join(root, "series4", "ct.dcm"))
    with open(os.path.join(root, "notes.txt"), "w", encoding="utf-8") as out:
        out.write("not DICOM\n")
    return root


def source_files(source: str) -> list[str]:
    """Paths relative to ``source``, ``/``-separated, sorted."""
    found = []
    for folder, _, names in os.walk(source):
        for name in names:
            found.append(os.path.relpath(os.path.join(folder, name), source).replace(os.sep, "/"))
    return sorted(found)


def pack(source: str, target: str, kind: str, mode) -> str:
    """``source``'s files as members ``study/<relative path>`` of ``target``."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if kind == "zip":
        with zipfile.ZipFile(target, "w", mode) as archive:
            for name in source_files(source):
                archive.write(os.path.join(source, name), "study/" + name)
    else:
        with tarfile.open(target, mode) as archive:
            for name in source_files(source):
                archive.add(os.path.join(source, name), "study/" + name)
    return target


def pack_all(source: str, folder) -> dict:
    """{archive name: path} of every archive in ``PACKED``."""
    return {
        name: pack(source, os.path.join(str(folder), name), kind, mode)
        for name, (kind, mode) in PACKED.items()
    }


def set_zip_flag(path: str, member: bytes, flag: int) -> None:
    """Set a general-purpose flag bit of one member, in its local and central headers
    (zipfile writes no encrypted members: this marks one as encrypted)."""
    data = bytearray(open(path, "rb").read())
    for signature, flag_offset, name_offset in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            length = int.from_bytes(data[start + name_offset - (4 if signature == b"PK\x03\x04" else 18):][:2], "little")
            name = bytes(data[start + name_offset:start + name_offset + length])
            if name == member:
                value = int.from_bytes(data[start + flag_offset:start + flag_offset + 2], "little")
                data[start + flag_offset:start + flag_offset + 2] = (value | flag).to_bytes(2, "little")
            start += 4
    open(path, "wb").write(bytes(data))


def rename_zip_member(path: str, old: bytes, new: bytes) -> None:
    """Replace a member's name bytes (same length) in both headers: names that zipfile
    would not write, such as Latin-1 bytes without the UTF-8 flag."""
    assert len(old) == len(new)
    data = open(path, "rb").read()
    assert data.count(old) == 2, data.count(old)
    open(path, "wb").write(data.replace(old, new))

"""Shared fixtures: pydicom's bundled files and small archives written with pydicom."""

from __future__ import annotations

import csv
import os
import shutil

import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from beam_pipeline.cli import main

PYDICOM_DATA = os.path.dirname(pydicom.data.__file__)
TEST_FILES = os.path.join(PYDICOM_DATA, "test_files")
CHARSET_FILES = os.path.join(PYDICOM_DATA, "charset_files")


def pydicom_file(name: str) -> str:
    """A file bundled with pydicom (never downloaded)."""
    for folder in (TEST_FILES, CHARSET_FILES):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(name)


def make_dataset(**elements) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def write_dicom(path, ds: Dataset | None = None, part10: bool = True, **elements) -> str:
    """Write ``ds`` (or a small CT dataset) as a DICOM file; ``part10=False`` writes a
    bare dataset with no preamble and no File Meta."""
    ds = ds if ds is not None else make_dataset(**elements)
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    if part10:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(str(path), enforce_file_format=True)
    else:
        ds.save_as(str(path), implicit_vr=True, little_endian=True)
    return str(path)


def copy_pydicom_file(name: str, folder, new_name: str | None = None) -> str:
    os.makedirs(str(folder), exist_ok=True)
    target = os.path.join(str(folder), new_name or name)
    shutil.copyfile(pydicom_file(name), target)
    return target


def read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def rows_by_name(rows: list[dict]) -> dict[str, dict]:
    return {os.path.basename(row["DicomPath"]): row for row in rows}


def run_cli(*args) -> int:
    return main([str(arg) for arg in args])


@pytest.fixture
def sequence_dataset():
    return build_sequence_dataset()


def build_sequence_dataset():
    """A dataset with a three-item sequence, a NONE value and a multi-valued element."""
    items = []
    for number in (1, 2, 3):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = f"1.2.3.{number}"
        items.append(item)
    return make_dataset(
        PatientName="Doe^Jane",
        PatientID="NONE",
        StudyDescription="N/A",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        ReferencedImageSequence=Sequence(items),
    )

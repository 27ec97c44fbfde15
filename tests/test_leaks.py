"""Nothing leaks: identifiers outside the elements PS3.15's table names.

A file-set written with pydicom's ``FileSet`` whose folders are named after the patients
(their IDs and names), a zip archive whose descriptions, comments, protocol names and
kept free text quote the patients' IDs and names, and pydicom's whole test set: each run
plain and de-identified, then ``tests/leak_scan.py`` looks for every removed or replaced
original in every byte of every output file."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import PYDICOM_DATA, make_dataset, read_csv, run_cli, write_dicom
from tests.leak_scan import leaks, originals
from transforms.common.rows import Row
from transforms.content.deidentify import Deidentifier, DeidSettings
from transforms.content.leaks import url_elements
from transforms.content.pseudonyms import Pseudonyms

KEY = "5e" * 32
# (Patient ID, name, the 8-character study folder named after the patient)
FILE_SET_PATIENTS = (
    ("PID47110", "Mueller^Juergen", "MUELLERJ"),
    ("QX900321", "Lindqvist^Annika", "LINDQVIS"),
)
# A short Patient ID: replaced in free text only as a whole word.
SHORT_ID = "P0815"


def _item(**elements) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def quoting_dataset(patient_id: str, name: str, **extra) -> Dataset:
    """A CT image whose removed and kept free text quote its patient's ID and name."""
    family = name.split("^")[0]
    elements = dict(
        PatientID=patient_id, PatientName=name, PatientBirthDate="19580203",
        StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
        StudyDate="20240117", StudyTime="083000", StudyID="1", AccessionNumber="ACC55120934",
        SeriesNumber="1", InstanceNumber="1",
        StudyDescription=f"Follow-up {patient_id}",
        SeriesDescription=f"{family} thorax",
        ProtocolName=f"{patient_id} low dose",
        ImageComments=f"patient {patient_id} {name}",
        # Kept by the profile: the originals inside must be replaced.
        ContentDescription=f"Scan of {patient_id} ({family}), accession ACC55120934",
        ManufacturerModelName=f"Model for {family.upper()}",
        ProcedureCodeSequence=Sequence([_item(
            CodeValue="CT-CHEST", CodingSchemeDesignator="99LOCAL",
            CodeMeaning=f"Chest CT of {name.replace('^', ' ')} [{patient_id}]",
        )]),
        ContentSequence=Sequence([_item(
            ValueType="TEXT", TextValue=f"Reported for {patient_id}; see {family}'s prior",
        )]),
        RetrieveURL=f"https://pacs.example/wado?patient={patient_id}",
    )
    return make_dataset(**{**elements, **extra})


def _file_meta(ds: Dataset) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_file_set(root) -> None:
    """pydicom writes ``PT000000/ST000000/...``; its patient and study folders are then
    renamed after the patient (same length, so the DICOMDIR's offsets stay valid) and the
    DICOMDIR's Referenced File IDs follow, as a CD burner would have named them."""
    file_set = FileSet()
    for patient_id, name, _ in FILE_SET_PATIENTS:
        study = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
        for number in ("1", "2"):
            file_set.add(_file_meta(quoting_dataset(patient_id, name, InstanceNumber=number,
                                                    **study)))
    file_set.write(str(root))
    dicomdir = pydicom.dcmread(os.path.join(str(root), "DICOMDIR"))
    renames = {}
    for record in dicomdir.DirectoryRecordSequence:
        if record.DirectoryRecordType == "PATIENT":
            patient = next(p for p in FILE_SET_PATIENTS if p[0] == record.PatientID)
        if "ReferencedFileID" in record:
            parts = list(record.ReferencedFileID)
            renames.setdefault(parts[0], patient[0])
            renames.setdefault(parts[0] + "/" + parts[1], patient[2])
            record.ReferencedFileID = [patient[0], patient[2], *parts[2:]]
    for old, new in sorted(renames.items(), key=lambda pair: -pair[0].count("/")):
        folder = os.path.join(str(root), *old.split("/"))
        os.rename(folder, os.path.join(os.path.dirname(folder), new))
    dicomdir.save_as(os.path.join(str(root), "DICOMDIR"))
    loaded = FileSet(os.path.join(str(root), "DICOMDIR"))  # still a valid file-set
    assert len(loaded) == 4 and all(os.path.exists(i.path) for i in loaded)
    assert {i.path.split(os.sep)[-4] for i in loaded} == {p[0] for p in FILE_SET_PATIENTS}


def write_quoting_zip(path) -> None:
    """A zip archive of images whose text quotes their patients, one with a short ID."""
    staging = os.path.join(os.path.dirname(str(path)), "zip-staging")
    with zipfile.ZipFile(str(path), "w") as archive:
        for index, (patient_id, name) in enumerate(
            [(SHORT_ID, "Oyelaran^Ade"), ("ZX-7731-0042", "Fairweather^Imogen")]
        ):
            member = write_dicom(os.path.join(staging, f"{index}.dcm"),
                                 quoting_dataset(patient_id, name))
            archive.write(member, f"{name.split('^')[0]}/{patient_id}/img{index}.dcm")
    shutil.rmtree(staging)


def plain_and_deidentified(inputs, out_dir, *flags, every_format=False
                           ) -> tuple[list, list, dict]:
    """``every_format``: the de-identified run also writes the DICOM JSON lines and the
    nested table as a folder of parts (``-o deid/scan/``), the rest beside it."""
    key = os.path.join(str(out_dir), "site.key")
    with open(key, "w", encoding="utf-8") as stream:
        stream.write(KEY)
    plain = os.path.join(str(out_dir), "plain", "scan.csv")
    deid = os.path.join(str(out_dir), "deid", "scan.csv")
    os.makedirs(os.path.dirname(plain))
    os.makedirs(os.path.dirname(deid))
    assert run_cli(inputs, "-o", plain, "--include-private", "--quiet") == 0
    target, formats = (deid[: -len(".csv")] + "/", "csv,parquet,nested,json") if every_format \
        else (deid, "csv,parquet")
    assert run_cli(inputs, "-o", target, "--format", formats, "--quiet", "--include-private",
                   "--deidentify", "--pseudonym-key-file", key, "--pseudonymize-paths",
                   *flags) == 0
    header, plain_rows = read_csv(plain)
    deid_header = read_csv(deid)[0]
    # The series and study tables name their columns by keyword (Columns, SeriesInstanceUID,
    # ..._Distinct): names this tool writes, like the table's own header.
    for table in ("scan.series.csv", "scan.studies.csv"):
        deid_header += read_csv(os.path.join(os.path.dirname(deid), table))[0]
    with open(os.path.join(os.path.dirname(deid), "scan.summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return plain_rows, header + deid_header, summary


def test_path_references_pseudonymized_urls_removed_free_text_replaced():
    pseudonyms = Pseudonyms(b"k" * 32)
    deidentifier = Deidentifier(DeidSettings(), pseudonyms)
    ref = "Directory Record Sequence (0004,1220) [2] - Referenced File ID (0004,1500)"
    text = "Content Description (0070,0081)"
    words = "Code Sequence (0008,1032) - Code Meaning (0008,0104)"
    row = Row("/a/P0815/x", {
        "Patient ID (0010,0020)": "P0815",
        "Patient's Name (0010,0010)": "Oyelaran^Ade",
        ref: "PID47110\\CR1\\6154",
        "Retrieve URL (0008,1190)": "https://pacs/wado?patient=PID47110",
        text: "Seen PID47110 and p0815; OYELARAN in P08150",
        words: "Ade's scan",
    }, {"Patient ID (0010,0020)": "LO", "Patient's Name (0010,0010)": "PN", ref: "CS",
        "Retrieve URL (0008,1190)": "UR", text: "LO", words: "LO"})
    result, replaced = deidentifier.apply(row, "P0815")
    values = result.values
    assert values[ref] == "\\".join(pseudonyms.path(part) for part in ("PID47110", "CR1", "6154"))
    assert "Retrieve URL (0008,1190)" not in values and 0x00081190 in url_elements()
    patient = pseudonyms.patient_id("P0815")
    # The folder's own pseudonym, the patient's, REMOVED for the name; P08150 is no ID.
    assert values[text] == (f"Seen {pseudonyms.path('PID47110')} and {patient}; "
                            "REMOVED in P08150")
    assert values[words] == "REMOVED's scan" and replaced == 4


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("leak_inputs")
    write_file_set(root / "burned-cd")
    write_quoting_zip(root / "export.zip")
    out_dir = tmp_path_factory.mktemp("leak_outputs")
    return (out_dir, *plain_and_deidentified(root, out_dir))


def test_file_set_and_quoting_archive_leak_nothing(generated):
    out_dir, plain_rows, column_names, summary = generated
    assert summary["rows"] == len(plain_rows) == 7 and summary["errors"] == 0  # 4 + DICOMDIR + 2
    needles = originals(plain_rows, column_names)
    # The check has teeth: folder names, names inside text, the short ID's neighbours.
    assert {"PID47110", "Mueller", "Lindqvist", "ZX-7731-0042", "ACC55120934"} <= needles
    found = leaks(out_dir / "deid", needles)
    assert not found, found[:20]
    assert leaks(out_dir / "plain", {"PID47110", "MUELLERJ"})  # and would find them
    # Kept free text: 4 files x (description, model, code meaning, text value) at least.
    assert summary["free_text_replacements"] >= 16
    deid_rows = read_csv(out_dir / "deid" / "scan.csv")[1]
    meanings = [r["Procedure Code Sequence (0008,1032) - Code Meaning (0008,0104)"]
                for r in deid_rows if r.get("Procedure Code Sequence (0008,1032) - Code Meaning (0008,0104)")]
    assert len(meanings) == 6 and all("REMOVED" in m for m in meanings)
    short = [m for m in meanings if "Oyelaran" in m or "REMOVED REMOVED" in m]
    assert short and all(SHORT_ID not in m for m in meanings)


def test_every_pydicom_file_leaks_nothing(tmp_path):
    """All of pydicom's bundled files (190 DICOM files of every kind, DICOMDIRs whose
    folders are named after the patient included)."""
    plain_rows, column_names, summary = plain_and_deidentified(PYDICOM_DATA, tmp_path,
                                                               every_format=True)
    assert summary["nested_parts"] == 1 and summary["json_rows"] == summary["rows"]
    needles = originals(plain_rows, column_names)
    assert len(needles) > 500 and "77654033" in needles  # a DICOMDIR's patient folder
    found = leaks(tmp_path / "deid", needles)
    assert not found, found[:20]
    assert summary["free_text_replacements"] > 0

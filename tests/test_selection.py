"""--tags / --exclude-tags on real files: columns exactly as asked, unselected elements
never converted, bad entries refused in one line with exit 2."""

from __future__ import annotations

import json
import os

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import transforms.reading.flatten as flatten_module
from tests.conftest import copy_pydicom_file, make_dataset, read_csv, run_cli, write_dicom
from transforms.reading.flatten import FlattenSettings, flatten
from transforms.content.selection import Selection, SelectionError, parse_tag_list

REF = "Referenced Image Sequence (0008,1140)"
REF_UID = "Referenced SOP Instance UID (0008,1155)"
REF_CLASS = "Referenced SOP Class UID (0008,1150)"


def study_dataset() -> Dataset:
    items = []
    for number in (1, 2):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = f"1.2.3.{number}"
        items.append(item)
    ds = make_dataset(PatientName="Doe^Jane", PatientID="P1", StudyDate="20200101",
                      ReferencedImageSequence=Sequence(items))
    siemens = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    siemens.add_new(0x08, "CS", "IMAGE NUM 4")
    other = ds.private_block(0x0029, "ACME 1.0", create=True)
    other.add_new(0x01, "LO", "acme value")
    return ds


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    write_dicom(root / "study.dcm", study_dataset())
    copy_pydicom_file("CT_small.dcm", root)
    copy_pydicom_file("chrSQEncoding.dcm", root)
    return root


def columns(archive, tmp_path, *flags) -> tuple[list[str], list[dict], dict]:
    out = tmp_path / "scan.csv"
    assert run_cli(archive, "-o", out, "--quiet", *flags) == 0
    header, rows = read_csv(out)
    summary = json.loads((tmp_path / "scan.summary.json").read_text())
    return header, rows, summary


def test_tags_give_exactly_the_columns_asked(archive, tmp_path):
    header, rows, summary = columns(
        archive, tmp_path, "--tags",
        "PatientID,(0008,0020),00080060,ReferencedImageSequence.ReferencedSOPInstanceUID",
    )
    assert header == [
        "DicomPath", "Study Date (0008,0020)", "Modality (0008,0060)",
        f"{REF} - {REF_UID}", f"{REF} [2] - {REF_UID}", "Patient ID (0010,0020)",
    ]
    assert len(rows) == 3
    assert summary["tags"] == [
        "PatientID", "(0008,0020)", "00080060",
        "ReferencedImageSequence.ReferencedSOPInstanceUID",
    ]
    assert summary["exclude_tags"] is None


def test_selecting_a_sequence_keeps_its_items_and_charsets_apply(archive, tmp_path):
    header, rows, _ = columns(archive, tmp_path, "--tags",
                              "ReferencedImageSequence,RequestedProcedureCodeSequence")
    assert f"{REF} - {REF_CLASS}" in header and f"{REF} [2] - {REF_UID}" in header
    name = "Requested Procedure Code Sequence (0032,1064) - Patient's Name (0010,0010)"
    assert name in header
    row = [row for row in rows if row[name]][0]
    assert row[name] == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
    assert all(column.startswith(("DicomPath", REF, "Requested Procedure Code")) for column in header)


def test_exclude_wins_and_wildcards_and_creator_blocks(archive, tmp_path):
    header, _, _ = columns(archive, tmp_path, "--include-private",
                           "--exclude-tags", "(0029,xxxx),PatientName,(0008,xxxx)")
    top_level = [name.split(" - ")[0] for name in header]
    assert not any("(0029," in name or "(0008," in name for name in top_level)
    # An entry without a path names top-level elements; nested copies stay.
    assert f"{REF} - {REF_UID}" not in header  # (0008,1140) itself is excluded
    assert "Requested Procedure Code Sequence (0032,1064) - Code Value (0008,0100)" in header
    assert "Patient's Name (0010,0010)" not in header and "Patient ID (0010,0020)" in header
    # A creator block implies reading private elements; the other block stays out.
    header, rows, _ = columns(archive, tmp_path, "--tags", "[SIEMENS CSA HEADER],Modality")
    assert header == [
        "DicomPath", "Modality (0008,0060)", "Private Creator (0029,0010)",
        "[SIEMENS CSA HEADER] CSA Image Header Type (0029,1008)",
    ]
    study = [row for row in rows if row["DicomPath"].endswith("study.dcm")][0]
    assert study["Private Creator (0029,0010)"] == "SIEMENS CSA HEADER"


def test_tag_list_from_file_with_comments(archive, tmp_path):
    listing = tmp_path / "tags.txt"
    listing.write_text("# what the cohort needs\nPatientID   # the key\n\n(0008,0060)\n")
    header, _, summary = columns(archive, tmp_path, "--tags", f"@{listing}")
    assert header == ["DicomPath", "Modality (0008,0060)", "Patient ID (0010,0020)"]
    assert summary["tags"] == ["PatientID", "(0008,0060)"]


@pytest.mark.parametrize("flags, message", [
    (["--tags", "PatientId"], "unknown keyword 'PatientId' (did you mean PatientID?)"),
    (["--tags", "(0010,002G)"], "not a keyword"),
    (["--exclude-tags", "Modality.PatientID"], "Modality is not a sequence"),
    (["--tags", "PatientID,,Modality"], "empty entry"),
    (["--tags", "[]"], "private creator"),
    (["--tags", "@/no/such/list.txt"], "cannot read tag list"),
])
def test_bad_entries_exit_2_in_one_line(archive, tmp_path, capsys, flags, message):
    out = tmp_path / "scan.csv"
    assert run_cli(archive, "-o", out, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_unselected_elements_are_never_converted(tmp_path, monkeypatch):
    """The walker skips unselected elements before formatting: with --tags PatientID the
    value formatter runs for Patient ID alone (and a skipped sequence is not parsed)."""
    path = write_dicom(tmp_path / "study.dcm", study_dataset())
    formatted, parsed = [], []
    real_decode, real_parse = flatten_module.decode_text, flatten_module.parse_sequence
    monkeypatch.setattr(flatten_module, "decode_text",
                        lambda vr, raw, enc: formatted.append(raw) or real_decode(vr, raw, enc))
    monkeypatch.setattr(flatten_module, "parse_sequence",
                        lambda raw, private: parsed.append(raw) or real_parse(raw, private))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    row, _ = flatten(ds, path, FlattenSettings(selection=Selection(("PatientID",))))
    assert row.values == {"DicomPath": path, "Patient ID (0010,0020)": "P1"}
    assert formatted == [b"P1"] and parsed == []
    everything, _ = flatten(pydicom.dcmread(path, stop_before_pixels=True), path)
    assert len(everything.values) > 8 and len(formatted) > 3 and parsed


def test_parse_tag_list_forms():
    assert parse_tag_list("(0029,xxxx), [SIEMENS CSA HEADER] ,00100020") == (
        "(0029,xxxx)", "[SIEMENS CSA HEADER]", "00100020")
    assert parse_tag_list("[1.2.840.113654.2.3.1995].(0029,1010)") == (
        "[1.2.840.113654.2.3.1995].(0029,1010)",)
    with pytest.raises(SelectionError):
        parse_tag_list("")

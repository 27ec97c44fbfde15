"""End to end on the DirectRunner: a mixed archive in, one CSV plus its reports out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pandas as pd
import polars as pl
import pytest
from PIL import Image

from transforms.reading.errors import ERROR_TYPES
from tests.conftest import (
    build_sequence_dataset,
    copy_pydicom_file,
    make_dataset,
    pydicom_file,
    read_csv,
    rows_by_name,
    run_cli,
    write_dicom,
)

GOOD = {
    "CT_small.dcm", "IM0001", "raw_no_meta", "ExplVR_BigEndNoMeta.dcm", "seq.dcm",
    "chrJapMulti.dcm", "text.dcm",
}
SKIPPED = {"notes.txt", "scan.png", "a.txt", "empty"}  # a.txt: member of bundle.zip
ERRORS = {"truncated.dcm", "garbage.dcm", "zero.dcm", "dicm_garbage.dcm"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    patient = root / "patient1" / "study1" / "series1"
    copy_pydicom_file("CT_small.dcm", patient)
    copy_pydicom_file("CT_small.dcm", patient, "IM0001")  # no extension
    copy_pydicom_file("ExplVR_BigEndNoMeta.dcm", root / "patient2")  # no preamble, big endian
    copy_pydicom_file("chrJapMulti.dcm", root / "patient3")
    write_dicom(root / "patient2" / "raw_no_meta", part10=False, PatientName="Raw^Dataset")
    write_dicom(root / "patient4" / "seq.dcm", build_sequence_dataset())
    write_dicom(
        root / "patient4" / "text.dcm",
        make_dataset(StudyDescription='Head, "with contrast"\nsecond line'),
    )
    # Not DICOM: skipped and counted, never rows.
    (root / "notes.txt").write_text("not a dicom file\n")
    Image.new("L", (8, 8)).save(root / "scan.png")
    with zipfile.ZipFile(root / "bundle.zip", "w") as bundle:
        bundle.writestr("a.txt", "x")
    (root / "empty").write_bytes(b"")
    # Broken files that claim to be DICOM: errors with reasons.
    data = open(pydicom_file("CT_small.dcm"), "rb").read()
    (root / "truncated.dcm").write_bytes(data[:1000])
    (root / "garbage.dcm").write_bytes(os.urandom(3000))
    (root / "zero.dcm").write_bytes(b"")
    (root / "dicm_garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(200))
    return root


@pytest.fixture(scope="module")
def extracted(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "scan.csv"
    assert run_cli(archive, "-o", out, "--quiet") == 0
    return out


def test_every_file_is_a_row_an_error_or_a_skip(extracted):
    _, rows = read_csv(extracted)
    assert set(rows_by_name(rows)) == GOOD
    _, errors = read_csv(str(extracted).replace(".csv", ".errors.csv"))
    assert {os.path.basename(e["DicomPath"]) for e in errors} == ERRORS
    assert all(e["ErrorType"] and e["Message"] for e in errors)
    by_name = {os.path.basename(e["DicomPath"]): e for e in errors}
    assert by_name["truncated.dcm"]["ErrorType"] == "Truncated"
    assert by_name["truncated.dcm"]["Exception"].startswith("TruncatedFileError: ")
    assert {e["ErrorType"] for e in errors} <= set(ERROR_TYPES)
    assert "empty file" in by_name["zero.dcm"]["Message"]
    _, skipped = read_csv(str(extracted).replace(".csv", ".skipped.csv"))
    assert {os.path.basename(s["DicomPath"]) for s in skipped} == SKIPPED
    summary = json.load(open(str(extracted).replace(".csv", ".summary.json")))
    assert summary["files_matched"] == len(GOOD | SKIPPED | ERRORS)
    assert (summary["rows"], summary["errors"], summary["non_dicom_skipped"]) == (
        len(GOOD), len(ERRORS), len(SKIPPED))
    assert summary["accounted_for"] is True
    assert not [name for name in os.listdir(extracted.parent) if ".tmp-" in name]


def test_values_and_columns(extracted):
    header, rows = read_csv(extracted)
    rows = rows_by_name(rows)
    assert header[0] == "DicomPath"
    assert rows["CT_small.dcm"]["Patient's Name (0010,0010)"] == "CompressedSamples^CT1"
    assert rows["CT_small.dcm"]["Image Type (0008,0008)"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert rows["IM0001"]["Patient's Name (0010,0010)"] == "CompressedSamples^CT1"
    assert rows["raw_no_meta"]["Patient's Name (0010,0010)"] == "Raw^Dataset"
    assert rows["chrJapMulti.dcm"]["Patient's Name (0010,0010)"] == "やまだ^たろう"
    assert rows["seq.dcm"]["Patient ID (0010,0020)"] == "NONE"
    assert (
        rows["seq.dcm"]["Referenced Image Sequence (0008,1140) [3] - "
                        "Referenced SOP Instance UID (0008,1155)"] == "1.2.3.3"
    )
    # Every column has a value in at least one row.
    for name in header:
        assert any(row[name] for row in rows.values()), name
    assert "Pixel Data (7FE0,0010)" not in header


def test_csv_round_trips_in_csv_pandas_and_polars(extracted):
    expected = 'Head, "with contrast"\nsecond line'
    column = "Study Description (0008,1030)"
    _, rows = read_csv(extracted)
    assert rows_by_name(rows)["text.dcm"][column] == expected
    frame = pd.read_csv(extracted, dtype=str, keep_default_na=False)
    assert frame.loc[frame.DicomPath.str.endswith("text.dcm"), column].item() == expected
    frame = pl.read_csv(extracted, infer_schema=False)
    assert frame.filter(pl.col("DicomPath").str.ends_with("text.dcm"))[column].item() == expected
    assert len(frame) == len(GOOD)


def test_in_process_and_multi_process_runs_write_identical_files(archive, extracted, tmp_path):
    out = tmp_path / "multi.csv"
    code = run_cli(archive, "-o", out, "--quiet",
                   "--direct_running_mode=multi_processing", "--direct_num_workers=2",
                   "--rows-per-shard=2")
    assert code == 0
    assert out.read_bytes() == extracted.read_bytes()
    errors = str(extracted).replace(".csv", ".errors.csv")
    assert open(str(out).replace(".csv", ".errors.csv")).read().replace(str(out), "") == \
        open(errors).read().replace(str(extracted), "")


def test_several_inputs_and_globs_without_duplicates(archive, tmp_path):
    out = tmp_path / "globbed.csv"
    assert run_cli(archive / "patient1", str(archive / "patient1" / "**" / "*.dcm"),
                   archive / "patient2" / "raw_no_meta", "-o", out, "--quiet") == 0
    _, rows = read_csv(out)
    assert sorted(rows_by_name(rows)) == ["CT_small.dcm", "IM0001", "raw_no_meta"]


def test_private_elements_under_include_private(tmp_path):
    ds = make_dataset(PatientName="Doe^John")
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    write_dicom(tmp_path / "in" / "private.dcm", ds)
    out = tmp_path / "private.csv"
    assert run_cli(tmp_path / "in", "-o", out, "--quiet", "--include-private") == 0
    header, rows = read_csv(out)
    assert rows[0]["[SIEMENS CSA HEADER] CSA Image Header Type (0029,1008)"] == "IMAGE NUM 4"
    assert run_cli(tmp_path / "in", "-o", out, "--quiet") == 0
    header, _ = read_csv(out)
    assert not any("SIEMENS" in name for name in header)


def test_unreadable_file_is_an_error_and_the_rest_succeed(tmp_path):
    folder = tmp_path / "in"
    copy_pydicom_file("CT_small.dcm", folder)
    locked = copy_pydicom_file("MR_small.dcm", folder)
    os.chmod(locked, 0)
    command = [sys.executable, "-m", "beam_pipeline", str(folder), "-o",
               str(tmp_path / "out.csv"), "--quiet"]
    if os.geteuid() == 0:
        # root reads anything; without the DAC capabilities it obeys file modes.
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"] + command
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    _, rows = read_csv(tmp_path / "out.csv")
    assert [os.path.basename(r["DicomPath"]) for r in rows] == ["CT_small.dcm"]
    _, errors = read_csv(tmp_path / "out.errors.csv")
    assert [(os.path.basename(e["DicomPath"]), e["ErrorType"]) for e in errors] == [
        ("MR_small.dcm", "Unreadable")]
    assert "Permission denied" in errors[0]["Message"]

"""--csv-formula-guard on files written with formula-like values: text cells are
defused in the CSV, numbers and the Parquet file are left as they are."""

from __future__ import annotations

import pyarrow.parquet as pq

from tests.conftest import make_dataset, read_csv, rows_by_name, run_cli, write_dicom


def test_formula_guard_prefixes_text_never_numbers(tmp_path):
    archive = tmp_path / "archive"
    write_dicom(archive / "a.dcm", make_dataset(
        ImageComments="=HYPERLINK(\"http://x\")", PatientName="-Doe^Jane",
        StudyDescription="@SUM(A1)", SliceLocation="-12.5", PatientWeight="+80",
        SeriesDescription="plain text"))
    write_dicom(archive / "b.dcm", make_dataset(ImageComments="\tcmd", PatientName="+Doe"))
    out = tmp_path / "out" / "scan.csv"
    out.parent.mkdir()
    assert run_cli(archive, "-o", out, "--format", "csv,parquet", "--csv-formula-guard",
                   "--quiet") == 0
    rows = rows_by_name(read_csv(out)[1])
    a, b = rows["a.dcm"], rows["b.dcm"]
    assert a["Image Comments (0020,4000)"] == "'=HYPERLINK(\"http://x\")"
    assert a["Patient's Name (0010,0010)"] == "'-Doe^Jane"
    assert a["Study Description (0008,1030)"] == "'@SUM(A1)"
    assert a["Series Description (0008,103E)"] == "plain text"
    assert a["Slice Location (0020,1041)"] == "-12.5"  # DS: a number
    assert a["Patient's Weight (0010,1030)"] == "+80"  # DS
    assert b["Image Comments (0020,4000)"] == "'\tcmd"
    assert b["Patient's Name (0010,0010)"] == "'+Doe"
    table = pq.read_table(tmp_path / "out" / "scan.parquet").to_pylist()
    assert {row["Image Comments (0020,4000)"] for row in table} == {
        "=HYPERLINK(\"http://x\")", "\tcmd"}
    # Without the flag the CSV holds the values as they are.
    plain = tmp_path / "plain.csv"
    assert run_cli(archive, "-o", plain, "--quiet") == 0
    assert rows_by_name(read_csv(plain)[1])["a.dcm"]["Image Comments (0020,4000)"].startswith("=")

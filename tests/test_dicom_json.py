"""``--format json`` (issue 20): the DICOM JSON Model (PS3.18 Annex F), one line per file.

Every line of pydicom's whole test-file set is read back with pydicom's
``Dataset.from_json`` and compared with ``dcmread`` element by element, in every item of
every sequence; runs are real DirectRunner runs."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import warnings

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from beam_pipeline.cli import main
from tests.conftest import CHARSET_FILES, TEST_FILES, build_sequence_dataset, write_dicom
from transforms.reading.dicom_json import LEFT_OUT_KEY, PATH_KEY, STORED_TEXT_KEY
from transforms.reading.flatten import is_skipped_group

MAX_BINARY = 4096
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UI", "UT"})


def run(output, *flags, inputs=(TEST_FILES, CHARSET_FILES)) -> dict:
    assert main([*map(str, inputs), "-o", str(output), "--quiet", *map(str, flags)]) == 0
    with open(str(output)[: -len(".csv")] + ".summary.json", encoding="utf-8") as stream:
        return json.load(stream)


def lines(path) -> list[dict]:
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def read_bytes(path) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def compare(ref, document: dict, got: Dataset, where: str, problems: list, counts: dict):
    """Every element ``dcmread`` gives (but the groups the tool never writes) is in the
    JSON, and equal once read back, unless it was left out with its marker."""
    for elem in ref:
        tag = BaseTag(elem.tag)
        if is_skipped_group(tag.group):
            continue
        key = f"{tag:08X}"
        element = document.get(key)
        if element is None:
            problems.append(f"{where}{key} missing")
            continue
        if LEFT_OUT_KEY in element:
            counts["left_out"] += 1
            if not element[LEFT_OUT_KEY] > MAX_BINARY:
                problems.append(f"{where}{key} left out at {element[LEFT_OUT_KEY]} bytes")
            continue
        if STORED_TEXT_KEY in element:
            counts["stored_text"] += 1
            if element[STORED_TEXT_KEY] != str(elem.value):
                problems.append(f"{where}{key} stored text {element[STORED_TEXT_KEY]!r}")
            continue
        counts["compared"] += 1
        if elem.VR == "SQ":
            items = element.get("Value", [])
            if len(items) != len(elem.value):
                problems.append(f"{where}{key}: {len(items)} items of {len(elem.value)}")
                continue
            for index, (item, item_doc, got_item) in enumerate(
                    zip(elem.value, items, got[tag].value)):
                compare(item, item_doc, got_item, f"{where}{key}[{index}].", problems, counts)
            continue
        value = got[tag].value
        if elem.value != value and not (elem.is_empty and got[tag].is_empty):
            problems.append(f"{where}{key} {elem.VR}: {elem.value!r:.60} != {value!r:.60}")


@pytest.fixture(scope="module")
def whole_set(tmp_path_factory):
    """pydicom's test and charset files, private elements too, every bundle run twice."""
    folder = tmp_path_factory.mktemp("json")
    summary = run(folder / "scan.csv", "--format", "csv,json", "--include-private",
                  "--max-binary-bytes", str(MAX_BINARY), "--direct_runner_bundle_repeat=1")
    return folder, summary


def test_every_line_reads_back_as_dcmread_reads_the_file(whole_set):
    folder, summary = whole_set
    documents = lines(folder / "scan.jsonl")
    with open(folder / "scan.csv", newline="", encoding="utf-8") as stream:
        paths = [row["DicomPath"] for row in csv.DictReader(stream)]
    assert [document[PATH_KEY] for document in documents] == paths  # one per row, same order
    assert summary["json_rows"] == summary["rows"] == len(documents) > 150
    assert summary["outputs"][-1] == str(folder / "scan.jsonl")
    problems, counts = [], {"compared": 0, "left_out": 0, "stored_text": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the test files' oddities
        for document in documents:
            path = document.pop(PATH_KEY)
            got = Dataset.from_json(document)
            ref = dcmread(path, stop_before_pixels=True, force=True)
            name = os.path.basename(path)
            if getattr(ref, "file_meta", None) is not None:
                compare(ref.file_meta, document, got, name + ": ", problems, counts)
            compare(ref, document, got, name + ": ", problems, counts)
    assert problems == []
    # The set holds long binary values and a non-number IS (badVR.dcm): both kept aside.
    assert counts["compared"] > 15000 and counts["left_out"] > 0 and counts["stored_text"] > 0


def test_person_names_and_binary_as_ps3_18_writes_them(whole_set):
    folder, _ = whole_set
    by_name = {os.path.basename(d[PATH_KEY]): d for d in lines(folder / "scan.jsonl")}
    # chrH31.dcm: Yamada^Tarou=山田^太郎=やまだ^たろう
    name = by_name["chrH31.dcm"]["00100010"]
    assert name["vr"] == "PN" and set(name["Value"][0]) == {"Alphabetic", "Ideographic", "Phonetic"}
    version = by_name["CT_small.dcm"]["00020001"]
    assert version == {"vr": "OB", "InlineBinary": base64.b64encode(b"\0\1").decode()}


def test_deidentified_json_agrees_with_the_table(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        shutil.copyfile(os.path.join(TEST_FILES, name), inputs / name)
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    run(tmp_path / "scan.csv", "--format", "csv,json", "--deidentify", "--pseudonym-key-file",
        key, "--retain-modified-dates", "--pseudonymize-paths", inputs=(inputs,))
    with open(tmp_path / "scan.csv", newline="", encoding="utf-8") as stream:
        rows = {row["DicomPath"]: row for row in csv.DictReader(stream)}
    documents = lines(tmp_path / "scan.jsonl")
    assert sorted(d[PATH_KEY] for d in documents) == sorted(rows)
    for document in documents:
        row = rows[document.pop(PATH_KEY)]
        got = Dataset.from_json(document)
        top_level = {name: text for name, text in row.items()
                     if " - " not in name and "#items" not in name and text}
        for element in got:
            if element.VR not in TEXT_VRS or element.is_empty:
                continue  # numbers and binary are written differently in the two
            [column] = [n for n in top_level
                        if n.endswith(f"({element.tag.group:04X},{element.tag.element:04X})")]
            values = element.value if element.VM > 1 else [element.value]
            assert [str(v).strip() for v in values] == top_level[column].split("\\"), column
        assert got.get("PatientName") is None and "00100010" not in document
        assert got.PatientID == row["Patient ID (0010,0020)"]
        assert got.SOPInstanceUID == row["SOP Instance UID (0008,0018)"] != dcmread(
            inputs / "CT_small.dcm").SOPInstanceUID
        # Every top-level column of the table is in the JSON too.
        tags = {f"{element.tag.group:04X},{element.tag.element:04X}" for element in got}
        assert {name[-10:-1] for name in top_level if name != "DicomPath"} <= tags


def test_tag_selection_applies(tmp_path):
    sequence = write_dicom(tmp_path / "sequence.dcm", build_sequence_dataset())
    run(tmp_path / "scan.csv", "--format", "json", "--tags",
        "PatientID,ReferencedImageSequence.ReferencedSOPInstanceUID",
        inputs=(os.path.join(TEST_FILES, "CT_small.dcm"), sequence))
    documents = {os.path.basename(d[PATH_KEY]): d for d in lines(tmp_path / "scan.jsonl")}
    assert len(documents) == 2 and not os.path.exists(tmp_path / "scan.csv")
    assert set(documents["CT_small.dcm"]) == {PATH_KEY, "00100020"}
    assert set(documents["sequence.dcm"]) == {PATH_KEY, "00100020", "00081140"}
    items = documents["sequence.dcm"]["00081140"]["Value"]
    assert items == [{"00081155": {"vr": "UI", "Value": [f"1.2.3.{n}"]}} for n in (1, 2, 3)]


def test_incremental_run_gives_the_same_files(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        shutil.copyfile(os.path.join(TEST_FILES, name), inputs / name)
    output = tmp_path / "incremental.csv"
    # Keyword names too: the tables rename at write time, the state keeps the rows.
    formats = ("--format", "csv,parquet,nested,json", "--column-names", "keyword")
    run(output, *formats, inputs=(inputs,))
    write_dicom(inputs / "new.dcm", PatientName="New^Patient", PatientID="42")
    summary = run(output, *formats, "--incremental", inputs=(inputs,))
    assert summary["files_reused"] == 3
    run(tmp_path / "full.csv", *formats, inputs=(inputs,))
    for suffix in (".jsonl", ".nested.parquet", ".csv", ".parquet"):
        assert read_bytes(tmp_path / f"full{suffix}") == \
            read_bytes(tmp_path / f"incremental{suffix}"), suffix
    assert len(lines(tmp_path / "full.jsonl")) == 4

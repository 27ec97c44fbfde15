"""Incremental runs and resuming killed runs, on real archives written with pydicom.

An incremental run must write exactly what a full run over the same files writes (the
CSV is sorted by path, so the bytes must be identical), and a run killed with SIGKILL
must leave the previous output, manifest and summary untouched and be finished by
running the same command again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from beam_pipeline.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
OUTPUTS = ("scan.csv", "scan.errors.csv", "scan.skipped.csv", "scan.summary.json")


def write_ct(path: str, number: int, **elements) -> str:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientID = f"P{number:05d}"
    ds.InstanceNumber = number
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_archive(root: str, count: int, start: int = 0) -> None:
    for number in range(start, start + count):
        write_ct(os.path.join(root, f"series{number % 4}", f"ct{number:05d}.dcm"), number)


def run(*args) -> dict:
    assert main([str(arg) for arg in args] + ["--quiet"]) == 0
    output = next(str(arg) for arg in args if str(arg).endswith(".csv"))
    with open(output[: -len(".csv")] + ".summary.json", encoding="utf-8") as stream:
        return json.load(stream)


def read_bytes(folder: str, names=OUTPUTS) -> dict:
    contents = {}
    for name in names:
        with open(os.path.join(folder, name), "rb") as stream:
            contents[name] = stream.read()
    return contents


def tree_bytes(folder: str) -> dict:
    contents = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as stream:
                contents[os.path.relpath(path, folder)] = stream.read()
    return contents


def assert_same_as_full_run(archive: str, output_dir: str, tmp_path, *options) -> None:
    """The CSV, errors and skipped files equal those of a fresh full run."""
    fresh = tmp_path / f"fresh-{time.monotonic_ns()}"
    fresh.mkdir()
    run(archive, "-o", fresh / "scan.csv", *options)
    names = OUTPUTS[:3] + ("scan.series.csv", "scan.studies.csv")
    assert read_bytes(output_dir, names) == read_bytes(str(fresh), names)


def generations(output_dir: str) -> list[str]:
    return sorted(name for name in os.listdir(os.path.join(output_dir, "scan.state"))
                  if name.startswith("gen-"))


def current_generation(output_dir: str) -> str:
    with open(os.path.join(output_dir, "scan.state", "CURRENT"), encoding="utf-8") as stream:
        return json.load(stream)["generation"]


def test_incremental_run_equals_a_full_run(tmp_path):
    archive = str(tmp_path / "archive")
    make_archive(archive, 30)
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        shutil.copyfile(os.path.join(TEST_FILES, name), os.path.join(archive, name))
    with open(os.path.join(archive, "notes.txt"), "w", encoding="utf-8") as stream:
        stream.write("not DICOM")
    with open(os.path.join(archive, "readme.txt"), "w", encoding="utf-8") as stream:
        stream.write("not DICOM either")
    with open(os.path.join(archive, "broken.dcm"), "wb") as stream:
        stream.write(b"not DICOM at all, yet named .dcm")
    out = tmp_path / "out"
    out.mkdir()
    output = out / "scan.csv"

    first = run(archive, "-o", output)
    assert first["files_matched"] == 36 and first["accounted_for"]
    assert first["files_extracted"] == 36 and first["files_reused"] == 0
    assert len(generations(str(out))) == 1
    header_before = (out / "scan.csv").read_text().splitlines()[0]

    # Between runs: add (one with a column nobody else has), change, delete (rtplan.dcm
    # holds the only sequence columns, which must disappear from the output).
    write_ct(os.path.join(archive, "new", "a.dcm"), 900, StudyDescription="only here")
    write_ct(os.path.join(archive, "new", "b.dcm"), 901)
    write_ct(os.path.join(archive, "series1", "ct00001.dcm"), 1, SeriesDescription="changed")
    changed = os.path.join(archive, "series2", "ct00002.dcm")
    write_ct(changed, 2)  # same size, new UID; give it a distinct mtime to be sure
    os.utime(changed, (time.time() + 5, time.time() + 5))
    os.remove(os.path.join(archive, "rtplan.dcm"))
    os.remove(os.path.join(archive, "series3", "ct00003.dcm"))
    os.remove(os.path.join(archive, "readme.txt"))

    second = run(archive, "-o", output, "--incremental")
    assert second["accounted_for"] and second["files_matched"] == 35
    assert second["incremental"] is True
    # Extracted: 2 new + 2 changed + broken.dcm (errors are always retried).
    assert second["files_extracted"] == 5
    assert second["files_reused"] == 30  # 29 unchanged rows + notes.txt
    assert second["files_dropped"] == 3
    assert second["files_resumed"] == 0
    header_after = (out / "scan.csv").read_text().splitlines()[0]
    assert "Beam Sequence" in header_before and "Beam Sequence" not in header_after
    assert "Study Description" in header_after
    assert_same_as_full_run(archive, str(out), tmp_path)
    # Only the new generation is kept, and CURRENT names it.
    (kept,) = generations(str(out))
    assert current_generation(str(out)) == kept
    assert second["state"].endswith(kept)

    # Nothing changed: nothing but the error is read again, and the output is the same.
    before = read_bytes(str(out), OUTPUTS[:3])
    third = run(archive, "-o", output, "--incremental")
    assert (third["files_extracted"], third["files_reused"], third["files_dropped"]) == (1, 34, 0)
    assert read_bytes(str(out), OUTPUTS[:3]) == before

    # Other settings make the kept rows useless: everything is extracted again.
    fourth = run(archive, "-o", output, "--incremental", "--max-binary-bytes", "8")
    assert fourth["files_extracted"] == 35 and fourth["files_reused"] == 0
    assert "other settings" in fourth["state_note"]
    assert_same_as_full_run(archive, str(out), tmp_path, "--max-binary-bytes", "8")


def test_full_run_without_incremental_reads_everything_again(tmp_path):
    archive = str(tmp_path / "archive")
    make_archive(archive, 6)
    out = tmp_path / "out"
    out.mkdir()
    run(archive, "-o", out / "scan.csv")
    again = run(archive, "-o", out / "scan.csv")
    assert again["files_extracted"] == 6 and again["files_reused"] == 0
    assert len(generations(str(out))) == 1


def _wait_for_shards(folder: str, wanted: int, process, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        state = os.path.join(folder, "scan.state")
        current = current_generation(folder)
        found = 0
        for name in os.listdir(state):
            if name.startswith("gen-") and name != current:
                found += sum(
                    entry.startswith("rows-") and entry.endswith(".parquet")
                    for entry in os.listdir(os.path.join(state, name))
                )
        if found >= wanted:
            return found
        time.sleep(0.02)
    return -1


def _wait_for_csv_shards(folder: str, process, timeout: float) -> int:
    """Wait until the run is writing the CSV: its temp dir holds a part of the table."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for name in os.listdir(folder):
            if ".tmp-" in name:
                entries = os.listdir(os.path.join(folder, name))
                if any(entry.endswith(".csv") for entry in entries):
                    return len(entries)
        time.sleep(0.005)
    return -1


@pytest.mark.parametrize("moment", ["extracting", "writing the CSV"])
def test_killed_run_keeps_previous_output_and_rerun_finishes_it(tmp_path, moment):
    archive = str(tmp_path / "archive")
    make_archive(archive, 200)
    out = tmp_path / "out"
    out.mkdir()
    command = [archive, "-o", str(out / "scan.csv"), "--rows-per-shard", "50"]
    run(*command)
    outputs_before = read_bytes(str(out))
    state_before = tree_bytes(str(out / "scan.state"))

    # The nightly delivery: many new files, one changed, one deleted.
    make_archive(archive, 1500, start=1000)
    write_ct(os.path.join(archive, "series1", "ct00001.dcm"), 1, SeriesDescription="changed")
    os.remove(os.path.join(archive, "series2", "ct00002.dcm"))

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline", *command, "--incremental", "--quiet"],
        cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        if moment == "extracting":
            # 4 shards of reused rows are copied; wait for shards of extracted rows.
            found = _wait_for_shards(str(out), 12, process, timeout=60)
        else:
            found = _wait_for_csv_shards(str(out), process, timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert found > 0, "the run ended before it could be killed mid-way"
    assert process.returncode == -signal.SIGKILL

    # The previous output, manifest and summary are untouched.
    assert read_bytes(str(out)) == outputs_before
    state_after = tree_bytes(str(out / "scan.state"))
    assert {name: data for name, data in state_after.items() if name in state_before} == state_before
    assert len(generations(str(out))) == 2

    # The same command again finishes the job and reuses the killed run's shards.
    summary = run(*command, "--incremental")
    assert summary["accounted_for"] and summary["files_matched"] == 1699
    assert summary["files_resumed"] >= 50
    if moment == "writing the CSV":  # every row was spilled: nothing is read again
        assert summary["files_extracted"] == 0
    assert summary["files_reused"] + summary["files_resumed"] + summary["files_extracted"] == 1699
    assert summary["files_extracted"] <= 1699 - summary["files_resumed"]
    assert summary["files_dropped"] == 1
    assert_same_as_full_run(archive, str(out), tmp_path)
    assert len(generations(str(out))) == 1
    assert not [name for name in os.listdir(out) if ".tmp-" in name]

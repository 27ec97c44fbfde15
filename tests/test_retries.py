"""Retried bundles, in-process and multi-process: the tables, errors, skips and an
incremental re-run are byte-identical to the plain run's.

``--direct_runner_bundle_repeat=1`` runs every bundle a second time, side effects
included (shards written twice, merges and commits repeated): what Dataflow's retries
and Flink's restarts do to a pipeline. Paths differ between runs only in the output
folder, which the comparison removes.
"""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq
import pytest

from conftest import build_sequence_dataset, copy_pydicom_file, make_dataset, run_cli, write_dicom

MODES = {
    "repeat-in-process": ["--direct_runner_bundle_repeat=1", "--direct_running_mode=in_memory"],
    "repeat-multi-process": ["--direct_runner_bundle_repeat=1",
                             "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}
TABLES = ("scan.csv", "scan.parquet", "scan.errors.csv", "scan.skipped.csv")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("retry-archive")
    copy_pydicom_file("CT_small.dcm", root / "a")
    copy_pydicom_file("MR_small.dcm", root / "a")
    copy_pydicom_file("rtplan.dcm", root / "b")
    copy_pydicom_file("chrJapMulti.dcm", root / "b")
    write_dicom(root / "c" / "seq.dcm", build_sequence_dataset())
    for number in range(12):
        write_dicom(root / "c" / f"ct{number:02d}.dcm", make_dataset(PatientID=f"P{number}"))
    (root / "notes.txt").write_text("not DICOM\n")
    (root / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")
    return root


def run(archive, folder, *flags):
    folder.mkdir(parents=True, exist_ok=True)
    assert run_cli(archive, "-o", folder / "scan.csv", "--quiet", "--format", "csv,parquet",
                   "--rows-per-shard", "4", *flags) == 0
    return {name: (folder / name).read_bytes().replace(str(folder).encode(), b"OUT")
            for name in TABLES}


@pytest.fixture(scope="module")
def plain(archive, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    first = run(archive, folder / "full")
    shutil.copytree(folder / "full", folder / "incremental")
    return first, folder


@pytest.mark.parametrize("mode", MODES)
def test_retried_bundles_give_identical_tables(mode, archive, plain, tmp_path):
    expected, _ = plain
    got = run(archive, tmp_path / mode, *MODES[mode])
    for name in TABLES:
        assert got[name] == expected[name], name
    # Cleanup kept only what the committed generation lists.
    (generation,) = [name for name in os.listdir(tmp_path / mode / "scan.state")
                     if name.startswith("gen-")]
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]
    folder = tmp_path / mode / "scan.state" / generation
    shards = [name for name in os.listdir(folder) if name.startswith("rows-")]
    # No shard of a discarded attempt is left: each row is held exactly once.
    assert sum(pq.ParquetFile(folder / name).metadata.num_rows for name in shards) == 17


@pytest.mark.parametrize("mode", MODES)
def test_retried_bundles_in_an_incremental_run(mode, archive, plain, tmp_path):
    """The state a repeated run commits is reused whole, and vice versa."""
    expected, folder = plain
    target = tmp_path / "out"
    shutil.copytree(folder / "full", target)
    again = run(archive, target, "--incremental", *MODES[mode])
    for name in TABLES:
        assert again[name] == expected[name], name
    import json

    summary = json.loads((target / "scan.summary.json").read_text())
    assert summary["files_extracted"] == 1  # the broken file: errors are retried
    assert summary["files_reused"] == 18 and summary["state_note"] == ""
    # A plain incremental run on the state the repeated run committed.
    last = run(archive, target, "--incremental")
    assert last == expected
    assert json.loads((target / "scan.summary.json").read_text())["files_reused"] == 18

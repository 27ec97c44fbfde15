"""State that cannot be trusted (corrupt, foreign, another version, another pydicom) is
a note in the summary and a full re-extraction, never a crash; nothing is pickled."""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest

from conftest import make_dataset, run_cli, write_dicom
from transforms.output import shard_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def committed(tmp_path):
    """An archive and a committed first run; returns (archive, out dir, generation)."""
    archive = tmp_path / "archive"
    for number in range(5):
        write_dicom(archive / f"ct{number}.dcm", make_dataset(PatientID=f"P{number}"))
    (archive / "notes.txt").write_text("not DICOM\n")
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli(archive, "-o", out / "scan.csv", "--quiet") == 0
    current = json.loads((out / "scan.state" / "CURRENT").read_text())["generation"]
    return archive, out, out / "scan.state" / current


def rerun(archive, out):
    before = (out / "scan.csv").read_bytes()
    assert run_cli(archive, "-o", out / "scan.csv", "--quiet", "--incremental") == 0
    summary = json.loads((out / "scan.summary.json").read_text())
    assert (out / "scan.csv").read_bytes() == before
    return summary


def shards(generation):
    return sorted(generation.glob("rows-*.parquet"))


def test_intact_state_is_reused(committed):
    archive, out, _ = committed
    summary = rerun(archive, out)
    assert (summary["files_reused"], summary["files_extracted"]) == (6, 0)
    assert summary["state_note"] == ""


@pytest.mark.parametrize("damage", [
    "CURRENT garbage", "CURRENT other version", "GENERATION other version",
    "settings of the pickled state", "shard foreign Parquet", "shard truncated",
    "shard of another format version", "outcomes garbage",
])
def test_untrusted_state_means_full_extraction_and_a_note(committed, damage):
    archive, out, generation = committed
    if damage == "CURRENT garbage":
        (out / "scan.state" / "CURRENT").write_bytes(b"\x80\x04\x95 pickled?")
    elif damage == "CURRENT other version":
        record = json.loads((out / "scan.state" / "CURRENT").read_text())
        (out / "scan.state" / "CURRENT").write_text(json.dumps({**record, "version": 99}))
    elif damage == "GENERATION other version":
        record = json.loads((generation / "GENERATION.json").read_text())
        (generation / "GENERATION.json").write_text(json.dumps({**record, "version": 1}))
    elif damage == "settings of the pickled state":
        (generation / "settings.json").write_text(json.dumps({"store_version": 1}))
    elif damage == "shard foreign Parquet":
        pq.write_table(pa.table({"DicomPath": ["x"]}), shards(generation)[0])
    elif damage == "shard truncated":
        data = shards(generation)[0].read_bytes()
        shards(generation)[0].write_bytes(data[: len(data) // 2])
    elif damage == "shard of another format version":
        path = shards(generation)[0]
        parquet = pq.ParquetFile(path)
        metadata = dict(parquet.metadata.metadata)
        metadata[b"dicom_meta.format_version"] = str(shard_format.FORMAT_VERSION + 1).encode()
        with pq.ParquetWriter(path.with_suffix(".tmp"), parquet.schema_arrow,
                              store_schema=False) as writer:
            writer.write_table(parquet.read())
            writer.add_key_value_metadata(metadata)
        os.replace(path.with_suffix(".tmp"), path)
    else:
        next(generation.glob("outcomes-*.parquet")).write_bytes(b"garbage")
    summary = rerun(archive, out)
    assert summary["accounted_for"]
    assert summary["files_extracted"] == 6 and summary["files_reused"] == 0
    assert summary["state_note"], damage
    # The new generation is sound again: the next run reuses everything.
    again = rerun(archive, out)
    assert again["files_reused"] == 6 and again["state_note"] == ""


def test_another_pydicom_version_invalidates_the_rows(committed, monkeypatch):
    """Column names come from pydicom's dictionary: its version is in the fingerprint."""
    archive, out, _ = committed
    monkeypatch.setattr(pydicom, "__version__", pydicom.__version__ + ".post1")
    summary = rerun(archive, out)
    assert summary["files_extracted"] == 6
    assert "pydicom" in summary["state_note"]


def test_a_truncated_shard_of_a_killed_run_is_skipped(committed):
    """An interrupted generation's shard cut short by a kill: its files are re-read, the
    rest of that generation is resumed."""
    archive, out, generation = committed
    killed = out / "scan.state" / "gen-20000101-000000-killed"
    killed.mkdir()
    for name in ("settings.json",):
        (killed / name).write_bytes((generation / name).read_bytes())
    good = shards(generation)[0]
    (killed / "rows-good.parquet").write_bytes(good.read_bytes())
    (killed / "rows-cut.parquet").write_bytes(good.read_bytes()[:100])
    assert run_cli(archive, "-o", out / "scan.csv", "--quiet") == 0
    summary = json.loads((out / "scan.summary.json").read_text())
    assert summary["files_resumed"] == 5 and summary["accounted_for"]
    assert not killed.exists()


def test_no_pickle_in_the_code_or_the_state(committed):
    _, out, _ = committed
    found = subprocess.run(["grep", "-rlE", r"import pickle|from pickle|cPickle", "transforms",
                            "beam_pipeline"], cwd=ROOT, capture_output=True, text=True)
    assert found.stdout == ""
    for folder, _, names in os.walk(out / "scan.state"):
        for name in names:
            data = open(os.path.join(folder, name), "rb").read()
            assert data.startswith((b"PAR1", b"{")), name  # Parquet or JSON


def test_code_fingerprint_follows_module_names_not_file_paths(tmp_path):
    """The packages copied to another folder give the same code fingerprint; an edit to
    one fingerprinted module changes it."""
    import shutil
    import sys

    from transforms.output import state

    here = state.code_fingerprint()
    for package in ("transforms", "beam_pipeline"):
        shutil.copytree(os.path.join(ROOT, package), tmp_path / "elsewhere" / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    program = "from transforms.output import state; print(state.code_fingerprint())"

    def fingerprint_in(folder):
        result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(folder)},
                                capture_output=True, text=True, check=True)
        return result.stdout.strip()

    assert fingerprint_in(tmp_path / "elsewhere") == here
    edited = tmp_path / "elsewhere" / "transforms" / "reading" / "cells.py"
    edited.write_text(edited.read_text() + "\n# an edit\n")
    assert fingerprint_in(tmp_path / "elsewhere") != here


def test_every_fingerprinted_module_exists():
    """A module renamed or moved to another package must be renamed in the list too:
    ``find_spec`` fails here rather than at a user's run."""
    from transforms.common.code_digest import source_of
    from transforms.content.settings import CONTENT_CODE_MODULES
    from transforms.output.state import ROW_CODE_MODULES

    for name in ROW_CODE_MODULES + tuple(CONTENT_CODE_MODULES):
        assert source_of(name)

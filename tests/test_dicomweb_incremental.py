"""``--incremental`` over a DICOMweb source, against a real Orthanc: a series is read
again only when it failed or its instances changed, and every output equals a fresh full
run's byte for byte (``transforms/output/web_reuse.py`` says what is reused and why)."""

from __future__ import annotations

import glob
import json
import os
import time

import pydicom
import pytest

from beam_pipeline.cli import main
from benchmarks.make_archive import generate
from dicomweb_servers import FaultyProxy, Orthanc
from test_dicomweb import LOCAL, require_orthanc


def outputs(folder) -> dict:
    """name -> bytes of every output a run wrote in ``folder`` but the summary and the
    HTML report (they say when and how the run went) and the state."""
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))
            if (folder / name).is_file() and not name.endswith((".summary.json", ".html"))}


def upload_folder(server, folder) -> list:
    """Upload every file under ``folder``; their datasets (without pixel data)."""
    datasets = []
    for path in sorted(glob.glob(str(folder) + "/**/*", recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as stream:
                assert server.upload(stream.read()) == "Success"
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
    return datasets


@pytest.fixture
def changing_server(tmp_path):
    """Orthanc (through a proxy that lists the paths asked) and a generated archive:
    study 1 holds four series (2, 1, 2 and 36 instances), study 2 one (9)."""
    require_orthanc()
    archive = tmp_path / "generated"
    assert generate(str(archive), 50, small=True, seed=5) == 50
    server = Orthanc(str(tmp_path / "orthanc"))
    proxy = FaultyProxy(server.url)
    try:
        yield server, proxy, archive / "PAT000001"
    finally:
        proxy.stop()
        server.stop()


def test_incremental_reuses_unchanged_series(changing_server, tmp_path):
    """--incremental reads only the series that failed or whose instances changed: a
    series that failed is read again; then, unchanged, no series metadata is requested;
    after two instances are deleted (one from a series whose instance search then fails)
    and a study added, only those three series are read, the deleted instances' rows are
    gone and each counts once in files_dropped. Every output equals a fresh full run's
    byte for byte (with bundles run twice too)."""
    server, proxy, patient = changing_server
    study = upload_folder(server, patient / "ST01")
    source = f"dicomweb+{proxy.url}/dicom-web"

    def run(name, *extra):
        out = tmp_path / name
        out.mkdir(exist_ok=True)
        del proxy.requests[:]
        started = time.monotonic()
        assert main([source, "-o", str(out / "scan.csv"), "--dicomweb-page-size=3", *LOCAL,
                     *extra]) == 0
        seconds = time.monotonic() - started
        summary = json.loads((out / "scan.summary.json").read_text())
        assert summary["accounted_for"]
        read = {path.split("/series/")[1].split("/")[0] for path in proxy.requests
                if path.endswith("/metadata")}
        return outputs(out), summary, read, seconds

    failing = next(ds for ds in study if ds.Modality == "RTPLAN").SeriesInstanceUID
    proxy.always_fail = f"{failing}/metadata"  # the first run: one error row
    first, summary, read, _ = run("out", "--dicomweb-retries=0")
    assert len(read) == 4 and summary["rows"] == 40 and summary["dicomweb_series_failed"] == 1
    proxy.always_fail = None
    retried, summary, read, _ = run("out", "--incremental")
    assert read == {failing}  # errors are always retried
    assert summary["dicomweb_series_read"] == 1 and summary["dicomweb_series_reused"] == 3
    assert summary["rows"] == 41 and first["scan.errors.csv"] != retried["scan.errors.csv"]
    again, summary, read, again_seconds = run("out", "--incremental")
    assert again == retried and read == set()  # no series metadata fetched again
    assert summary["dicomweb_series_read"] == 0 and summary["dicomweb_series_reused"] == 4
    assert summary["dicomweb_instances_reused"] == 41 and summary["files_dropped"] == 0
    assert summary["files_matched"] == summary["rows"] == 41
    # The instance searches were paged (three a page) like the other searches.
    assert any("/instances?" in path and "offset=3" in path for path in proxy.requests)
    full, _, _, full_seconds = run("full")
    assert full == again
    print(f"DICOMweb, 41 instances in 4 series: full run {full_seconds:.1f} s, "
          f"incremental run with nothing changed {again_seconds:.1f} s")

    # One instance deleted from the CT series and one from the RT structure set series,
    # whose instance search then fails: both series are read again, and each deleted
    # row counts once in files_dropped, the second counted when its series is read.
    gone = next(ds for ds in study if ds.Modality == "CT")
    hidden = next(ds for ds in study if ds.Modality == "RTSTRUCT")
    server.delete_instance(gone.SOPInstanceUID)
    server.delete_instance(hidden.SOPInstanceUID)
    added = upload_folder(server, patient / "ST02")
    proxy.always_fail = f"/series/{hidden.SeriesInstanceUID}/instances"
    changed, summary, read, _ = run("out", "--incremental", "--direct_runner_bundle_repeat=1",
                                    "--dicomweb-retries=0")
    assert proxy.failed and any(proxy.always_fail in path for path in proxy.requests)
    proxy.always_fail = None
    assert read == {gone.SeriesInstanceUID, hidden.SeriesInstanceUID,
                    added[0].SeriesInstanceUID}
    assert summary["dicomweb_series_read"] == 3 and summary["dicomweb_series_reused"] == 2
    assert summary["dicomweb_instances_reused"] == 3 and summary["files_dropped"] == 2
    assert summary["files_matched"] == summary["rows"] == 48
    assert summary["errors"] == summary["dicomweb_series_failed"] == 0
    table = changed["scan.csv"].decode()
    for deleted in (gone, hidden):
        assert f"/instances/{deleted.SOPInstanceUID}" not in table
    assert f"/instances/{added[0].SOPInstanceUID}" in table
    fresh, summary, read, _ = run("fresh")
    assert len(read) == 5 and summary["rows"] == 48
    assert changed == fresh

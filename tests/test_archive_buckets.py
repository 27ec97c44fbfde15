"""Archives in buckets: the GCS emulator and moto's S3 server on 127.0.0.1.

The archives the local tests pack (zip stored and deflated, tar, tar.gz) are uploaded
with the unpacked folder; every bucket run must give the local run's CSV, reports and
counts (only the path prefix differs), and a zip of large slices must cost its headers,
not its size, on the wire.
"""

from __future__ import annotations

import json
import os
import time
import zipfile

import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import storage_servers as ss
from archive_fixtures import ct_slice, make_source, pack
from conftest import read_csv, run_cli

ARCHIVES = {
    "stored.zip": ("zip", zipfile.ZIP_STORED),
    "deflated.zip": ("zip", zipfile.ZIP_DEFLATED),
    "plain.tar": ("tar", "w"),
    "gzip.tar.gz": ("tar", "w:gz"),
}


# The servers and the loopback guard of the bucket tests (module-scoped: started here
# again, stopped at this module's end).
from test_buckets import (  # noqa: E402,F401  (fixtures, used by name)
    BUCKET, gcs, loopback_only, reset_filesystem_options, s3,
)


def upload(local_root: str, prefix: str, options=None) -> None:
    FileSystems.set_options(options)
    for folder, _, names in os.walk(local_root):
        for name in names:
            path = os.path.join(folder, name)
            # UNCOMPRESSED: Beam would otherwise gzip a .gz name once more.
            with open(path, "rb") as source, FileSystems.create(
                prefix + os.path.relpath(path, local_root),
                compression_type=CompressionTypes.UNCOMPRESSED,
            ) as out:
                out.write(source.read())
    FileSystems.set_options(None)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The archives (and a 12-slice stored zip of 512x512 CTs), and their local run."""
    root = tmp_path_factory.mktemp("archive-buckets") / "inputs"
    source = make_source(root / "unpacked")
    for name, (kind, mode) in ARCHIVES.items():
        pack(source, str(root / "archives" / name), kind, mode)
    slices = tmp_path_factory.mktemp("slices")
    for index in range(12):
        ct_slice(slices / f"ct{index:02}.dcm", size=512)
    pack(str(slices), str(root / "big" / "slices.zip"), "zip", zipfile.ZIP_STORED)
    out = tmp_path_factory.mktemp("archive-buckets-out") / "scan.csv"
    assert run_cli(root, "-o", out, "--quiet") == 0
    return str(root), str(out)


@pytest.fixture(scope="module")
def stores(gcs, s3, local):
    stores = {
        "gs": (f"gs://{BUCKET}/inputs/", []),
        "s3": (f"s3://{BUCKET}/inputs/", ss.s3_pipeline_args(s3.endpoint)),
    }
    for prefix, args in stores.values():
        upload(local[0], prefix, PipelineOptions(args))
    return stores


def local_bytes(local_out: str, suffix: str, root: str, prefix: str) -> bytes:
    with open(local_out[: -len(".csv")] + suffix, "rb") as stream:
        return stream.read().replace(root.encode() + b"/", prefix.encode())


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_bucket_archives_give_the_local_tables(scheme, stores, local, tmp_path):
    root, local_out = local
    prefix, args = stores[scheme]
    out = tmp_path / "scan.csv"
    assert run_cli(prefix, "-o", out, "--quiet", *args) == 0
    for suffix in (".csv", ".errors.csv", ".skipped.csv"):
        assert (tmp_path / ("scan" + suffix)).read_bytes() == local_bytes(
            local_out, suffix, root, prefix), suffix
    summary = json.loads((tmp_path / "scan.summary.json").read_text())
    expected = json.loads(open(local_out[: -len(".csv")] + ".summary.json").read())
    for key in ("files_matched", "rows", "errors", "non_dicom_skipped", "archives"):
        assert summary[key] == expected[key], key
    assert summary["accounted_for"] is True and summary["archives"] == len(ARCHIVES) + 1
    _, rows = read_csv(out)
    assert any(row["DicomPath"].startswith(prefix + "archives/deflated.zip!/study/")
               for row in rows)


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_bucket_zip_costs_its_headers_not_its_size(scheme, gcs, s3, stores, local, tmp_path):
    root, _ = local
    size = os.path.getsize(os.path.join(root, "big", "slices.zip"))
    server = gcs if scheme == "gs" else s3
    path = stores[scheme][0] + "big/slices.zip"
    with ss.CountingProxy(server.port) as proxy:
        previous = os.environ["STORAGE_EMULATOR_HOST"]
        args = []
        if scheme == "gs":
            os.environ["STORAGE_EMULATOR_HOST"] = proxy.endpoint
        else:
            args = ss.s3_pipeline_args(proxy.endpoint)
        try:
            proxy.reset()
            assert run_cli(path, "-o", tmp_path / "scan.csv", "--quiet", *args) == 0
            time.sleep(0.3)  # let the proxy's pumps finish counting
            transferred = proxy.down
        finally:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
    _, rows = read_csv(tmp_path / "scan.csv")
    assert len(rows) == 12 and rows[0]["Rows (0028,0010)"] == "512"
    print(f"\n{scheme}: stored zip of 12 512x512 CT slices, {size} bytes: "
          f"{transferred} bytes transferred by the whole run (HTTP headers included)")
    assert transferred < size / 10


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_incremental_bucket_run_reuses_archives(scheme, stores, local, tmp_path):
    prefix, args = stores[scheme]
    out = tmp_path / "scan.csv"
    assert run_cli(prefix + "archives/", "-o", out, "--quiet", *args) == 0
    first = out.read_bytes()
    assert run_cli(prefix + "archives/", "-o", out, "--quiet", "--incremental", *args) == 0
    summary = json.loads((tmp_path / "scan.summary.json").read_text())
    assert (summary["files_reused"], summary["files_extracted"]) == (len(ARCHIVES), 0)
    assert summary["accounted_for"] is True
    assert out.read_bytes() == first

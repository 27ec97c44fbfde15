"""gs:// and s3:// inputs and outputs, against storage servers started here on 127.0.0.1.

GCS is ``gcp-storage-emulator`` (reached through ``STORAGE_EMULATOR_HOST``), S3 is moto in
server mode (reached through ``--s3_endpoint_url``). One generated archive (small DICOM
files, a 512x512 16-bit CT, a non-DICOM file) is uploaded to both; every run must give
the CSV of the local run, with only the path prefix changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from conftest import make_dataset, run_cli, write_dicom
import storage_servers as ss

from transforms.inputs import discover, ranged, storage
from transforms.reading import extract as extract_module
from transforms.reading.extract import ExtractHeaders
from transforms.reading.flatten import FlattenSettings

BUCKET = "dicom-test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------------------
# Servers and the archive
# --------------------------------------------------------------------------------------

def extract_one(extract, path):
    """What the pipeline's extraction makes of one matched object."""
    outcome, _reader_counts = extract.process([FileSystems.match([path])[0].metadata_list[0]])
    return outcome


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    """Nothing here may reach past 127.0.0.1 (no credential or metadata lookups)."""
    with ss.loopback_only():
        yield


@pytest.fixture(scope="module")
def gcs():
    server = ss.start_gcs_emulator(bucket=BUCKET)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    # Only the emulator's address: no credential settings, the tool must not look.
    os.environ["STORAGE_EMULATOR_HOST"] = server.endpoint
    # This process uses Beam's FileSystems directly (uploads, reads): the CLI and the
    # pipeline's steps do this themselves.
    storage.prepare_filesystems()
    try:
        yield server
    finally:
        ss.restore_env({"STORAGE_EMULATOR_HOST": previous})
        server.stop()


@pytest.fixture(scope="module")
def s3():
    server = ss.start_moto_server(bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def reset_filesystem_options():
    yield
    FileSystems.set_options(None)


def ct_512(path) -> str:
    ds = make_dataset(PatientName="Big^Slice", PatientID="CT512",
                      ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.PixelData = np.arange(512 * 512, dtype="<i2").tobytes()
    return write_dicom(path, ds)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("buckets") / "archive"
    write_dicom(root / "a.dcm", PatientName="Doe^Jane", PatientID="A1")
    write_dicom(root / "sub" / "b.dcm", PatientName="Roe^Rick", PatientID="NONE")
    write_dicom(root / "sub" / "raw-no-meta", part10=False, PatientID="RAW")
    # A header longer than the first ranged read: its text is fetched by more requests.
    write_dicom(root / "sub" / "long-header.dcm", PatientID="LONG",
                TextValue="x" * (3 * ranged.FIRST_BLOCK))
    ct_512(root / "ct" / "ct512.dcm")
    (root / "notes.txt").write_text("not DICOM\n")
    (root / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")
    return str(root)


def upload(local_root: str, prefix: str, options=None) -> None:
    FileSystems.set_options(options)
    for folder, _, names in os.walk(local_root):
        for name in names:
            path = os.path.join(folder, name)
            target = prefix + os.path.relpath(path, local_root)
            with open(path, "rb") as source, FileSystems.create(target) as out:
                out.write(source.read())
    FileSystems.set_options(None)


def s3_args(endpoint: str) -> list[str]:
    return ss.s3_pipeline_args(endpoint)


@pytest.fixture(scope="module")
def stores(gcs, s3, archive):
    """{scheme: (archive prefix, CLI args)} with the archive uploaded to both servers."""
    stores = {
        "gs": (f"gs://{BUCKET}/archive/", []),
        "s3": (f"s3://{BUCKET}/archive/", s3_args(s3.endpoint)),
    }
    for prefix, args in stores.values():
        upload(archive, prefix, PipelineOptions(args))
    return stores


@pytest.fixture(scope="module")
def local_run(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "scan.csv"
    assert run_cli(archive, "-o", out, "--quiet") == 0
    return str(out)


def read_bytes(path: str, args=()) -> bytes:
    FileSystems.set_options(PipelineOptions(list(args)))
    with FileSystems.open(path) as stream:
        return stream.read()


def expected(local_output: str, suffix: str, archive: str, prefix: str) -> bytes:
    with open(local_output[: -len(".csv")] + suffix, "rb") as stream:
        return stream.read().replace(archive.encode() + b"/", prefix.encode())


# --------------------------------------------------------------------------------------
# Same CSV as the local run
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_bucket_input_local_output(scheme, stores, archive, local_run, tmp_path):
    prefix, args = stores[scheme]
    out = tmp_path / "scan.csv"
    assert run_cli(prefix, "-o", out, "--quiet", *args) == 0
    for suffix in (".csv", ".errors.csv", ".skipped.csv"):
        got = (tmp_path / ("scan" + suffix)).read_bytes()
        assert got == expected(local_run, suffix, archive, prefix), suffix
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_bucket_input_bucket_output(scheme, stores, archive, local_run):
    prefix, args = stores[scheme]
    out_dir = f"{scheme}://{BUCKET}/out-{uuid.uuid4().hex[:6]}/"
    assert run_cli(prefix.rstrip("/"), "-o", out_dir + "scan.csv", "--quiet", *args) == 0
    for suffix in (".csv", ".errors.csv", ".skipped.csv"):
        got = read_bytes(out_dir + "scan" + suffix, args)
        assert got == expected(local_run, suffix, archive, prefix), suffix
    # Temporary shards, the merged temp file and the write probe are all gone; the
    # state for the next incremental run is one generation and its CURRENT pointer.
    left = [m.path[len(out_dir):] for m in FileSystems.match([out_dir + "**"])[0].metadata_list]
    assert sorted(p for p in left if not p.startswith("scan.state/")) == [
        "scan.csv", "scan.errors.csv", "scan.report.html", "scan.series.csv",
        "scan.skipped.csv", "scan.studies.csv", "scan.summary.json"]
    # The HTML report was computed from the table in the bucket.
    report = read_bytes(out_dir + "scan.report.html", args).decode("utf-8")
    local_summary = json.loads(open(local_run[: -len(".csv")] + ".summary.json").read())
    assert f'data-figure="rows" data-value="{local_summary["rows"]}"' in report
    assert f'data-figure="table_columns" data-value="{local_summary["columns"]}"' in report
    state = {p.split("/")[1] for p in left if p.startswith("scan.state/")}
    assert "CURRENT" in state and len(state) == 2, state


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_parquet_in_a_bucket_equals_the_local_file(scheme, stores, archive, tmp_path):
    """The Parquet merge reads its parts back from the bucket with ranged reads."""
    prefix, args = stores[scheme]
    assert run_cli(archive, "-o", tmp_path / "scan.csv", "--quiet", "--format", "parquet",
                   "--rows-per-shard", "2") == 0
    out = f"{scheme}://{BUCKET}/pq-{uuid.uuid4().hex[:6]}/scan.parquet"
    assert run_cli(prefix.rstrip("/"), "-o", out, "--quiet", "--format", "parquet",
                   "--rows-per-shard", "2", *args) == 0
    remote = pq.read_table(pa.BufferReader(read_bytes(out, args)))
    # The HTML report next to it streamed that Parquet file from the bucket.
    report = read_bytes(out[: -len(".parquet")] + ".report.html", args).decode("utf-8")
    assert f'data-figure="table_columns" data-value="{remote.num_columns}"' in report
    local = pq.read_table(tmp_path / "scan.parquet")
    assert remote.num_rows == local.num_rows > 2  # several parts were merged
    assert remote.drop_columns(["DicomPath"]).equals(local.drop_columns(["DicomPath"]))
    assert [path[len(prefix):] for path in remote["DicomPath"].to_pylist()] == [
        os.path.relpath(path, archive) for path in local["DicomPath"].to_pylist()]


def test_mixed_local_and_bucket_inputs(stores, archive, local_run, s3, tmp_path):
    """Local files, a gs:// folder and an s3:// file in one run; output to s3."""
    gs_prefix, _ = stores["gs"]
    s3_prefix, args = stores["s3"]
    out = f"s3://{BUCKET}/mixed-{uuid.uuid4().hex[:6]}/scan.csv"
    inputs = [os.path.join(archive, "a.dcm"), gs_prefix + "sub", s3_prefix + "ct/ct512.dcm"]
    # --max-cell-chars=0: the 48 KB text must come out whole, proving the ranged reads.
    assert run_cli(*inputs, "-o", out, "--quiet", "--max-cell-chars=0", *args) == 0
    text = read_bytes(out, args).decode()
    paths = [line.split(",", 1)[0] for line in text.splitlines()[1:]]
    assert paths == sorted([
        os.path.join(archive, "a.dcm"), gs_prefix + "sub/b.dcm",
        gs_prefix + "sub/long-header.dcm", gs_prefix + "sub/raw-no-meta",
        s3_prefix + "ct/ct512.dcm",
    ])
    assert "x" * (3 * ranged.FIRST_BLOCK) in text  # the long text value, read whole


# --------------------------------------------------------------------------------------
# Header-only reads: bytes on the wire
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_header_read_transfers_header_plus_at_most_64k(scheme, gcs, s3, stores, archive):
    ct_bytes = open(os.path.join(archive, "ct", "ct512.dcm"), "rb").read()
    header_length = ct_bytes.index(b"\xe0\x7f\x10\x00")  # the Pixel Data tag
    server = gcs if scheme == "gs" else s3
    with ss.CountingProxy(server.port) as proxy:
        previous = os.environ["STORAGE_EMULATOR_HOST"]
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.endpoint
        options = PipelineOptions(s3_args(proxy.endpoint) if scheme == "s3" else [])
        FileSystems.set_options(options)
        try:
            extract = ExtractHeaders(FlattenSettings())
            extract.setup()
            path = stores[scheme][0] + "ct/ct512.dcm"
            with ranged.open_ranged(path, options) as warm:  # client set up, not counted
                warm.read(1)
            metadata = FileSystems.match([path])[0].metadata_list[0]  # as Discover does
            time.sleep(0.2)
            proxy.reset()
            row, _reader_counts = extract.process([metadata])
            time.sleep(0.3)  # let the proxy's pumps finish counting
            transferred = proxy.down
        finally:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
    assert row.values["Rows (0028,0010)"] == "512"
    print(f"\n{scheme}: 512x512 CT of {len(ct_bytes)} bytes, header {header_length} bytes: "
          f"{transferred} bytes transferred (HTTP headers included)")
    assert transferred <= header_length + 64 * 1024
    assert transferred < len(ct_bytes) / 10


def test_ranged_reader_grows_only_when_needed(stores, archive, monkeypatch):
    """A long header costs more requests; a short one exactly one."""
    prefix, _ = stores["gs"]
    extract = ExtractHeaders(FlattenSettings())
    extract.setup()
    readers = []

    def spy(*args, **kwargs):
        readers.append(ranged.open_ranged(*args, **kwargs))
        return readers[-1]

    monkeypatch.setattr(extract_module, "open_ranged", spy)
    short = extract_one(extract, prefix + "a.dcm")
    long = extract_one(extract, prefix + "sub/long-header.dcm")
    assert short.values["Patient ID (0010,0020)"] == "A1"
    assert long.values["Text Value (0040,A160)"] == "x" * (3 * ranged.FIRST_BLOCK)
    assert readers[0].requests == 1
    assert readers[1].requests > 1


# --------------------------------------------------------------------------------------
# Bad bucket input
# --------------------------------------------------------------------------------------

def test_object_vanished_between_match_and_read(stores, archive, tmp_path, monkeypatch):
    """Objects deleted after the listing: one error row each, every other file kept."""
    gs_prefix, _ = stores["gs"]
    s3_prefix, args = stores["s3"]
    run = uuid.uuid4().hex[:6]
    inputs = []
    for prefix in (gs_prefix, s3_prefix):
        folder = prefix.replace("/archive/", f"/vanish-{run}/")
        upload(os.path.join(archive, "sub"), folder, PipelineOptions(args))
        inputs.append(folder)
    doomed = [inputs[0] + "b.dcm", inputs[1] + "b.dcm"]
    count = discover._CountMatched.process

    def delete_then_count(self, metadata):
        if metadata.path in doomed:
            FileSystems.delete([metadata.path])
        yield from count(self, metadata)

    monkeypatch.setattr(discover._CountMatched, "process", delete_then_count)
    out = tmp_path / "scan.csv"
    # In process, so the patched step is the one that runs.
    assert run_cli(*inputs, "-o", out, "--quiet", "--direct_running_mode=in_memory", *args) == 0
    errors = (tmp_path / "scan.errors.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[0] for line in errors[1:]] == [
        f"{path},Unreadable,no such object: {path}" for path in sorted(doomed)
    ]
    assert all(line.endswith(",FileNotFoundError: [Errno 2] no such object: " + path)
               for line, path in zip(errors[1:], sorted(doomed)))
    rows = (tmp_path / "scan.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2  # long-header.dcm and raw-no-meta on each store


def one_line_error(capsys, *args) -> str:
    assert run_cli(*args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_missing_bucket_is_a_usage_error(scheme, stores, tmp_path, capsys):
    _, args = stores[scheme]
    missing = f"{scheme}://no-such-bucket-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    line = one_line_error(capsys, missing + "/archive/", "-o", tmp_path / "x.csv", *args)
    assert f"bucket {missing} does not exist" in line
    line = one_line_error(capsys, stores[scheme][0], "-o", missing + "/x.csv", *args)
    assert f"bucket {missing} does not exist" in line
    line = one_line_error(capsys, stores[scheme][0] + "nothing-here/", "-o",
                          tmp_path / "x.csv", *args)
    assert "matches no object" in line
    # Timings are measured, never asserted (the machine is shared): print it.
    print(f"\nthree bucket usage errors: {time.monotonic() - started:.1f} s")
    assert not os.listdir(tmp_path)


def test_s3_no_permission_is_a_usage_error(tmp_path, capsys):
    server = ss.start_moto_server(
        bucket="locked", extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        ss.boto3_client(server.endpoint).put_object(Bucket="locked", Key="a/x.dcm", Body=b"x")
        key_id, secret = ss.make_s3_user_without_permissions(server.endpoint)
        args = [f"--s3_endpoint_url={server.endpoint}", f"--s3_access_key_id={key_id}",
                f"--s3_secret_access_key={secret}", f"--s3_region_name={ss.S3_REGION}"]
        line = one_line_error(capsys, "s3://locked/a/", "-o", tmp_path / "x.csv", *args)
        assert "no permission to list s3://locked/a/" in line
        options = PipelineOptions(args)
        with pytest.raises(PermissionError):
            ranged.open_ranged("s3://locked/a/x.dcm", options).read(10)
    finally:
        server.stop()


def test_gcs_no_permission(gcs, tmp_path, capsys):
    with ss.ForbiddenGcsServer() as forbidden:
        previous = os.environ["STORAGE_EMULATOR_HOST"]
        os.environ["STORAGE_EMULATOR_HOST"] = forbidden.endpoint
        try:
            line = one_line_error(capsys, f"gs://{BUCKET}/a/", "-o", tmp_path / "x.csv")
            assert f"no permission to list gs://{BUCKET}/a/" in line
            with pytest.raises(PermissionError):
                ranged.open_ranged(f"gs://{BUCKET}/a/x.dcm").read(10)
        finally:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


# --------------------------------------------------------------------------------------
# No credential lookup against emulators or with --anonymous-access
# --------------------------------------------------------------------------------------

def test_no_credential_stall_in_fresh_worker_processes(gcs, stores, tmp_path):
    """A new CLI process with two worker processes and only STORAGE_EMULATOR_HOST set:
    Beam would look for Application Default Credentials in each (~20 s)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_"))}
    env.update(STORAGE_EMULATOR_HOST=gcs.endpoint, PYTHONPATH=ROOT,
               NO_GCE_CHECK="false", GOOGLE_APPLICATION_CREDENTIALS="/nonexistent.json")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "beam_pipeline", stores["gs"][0] + "sub/",
         "-o", str(tmp_path / "scan.csv"), "--quiet", "--direct_num_workers=2",
         "--direct_running_mode=multi_processing"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    print(f"\nfresh CLI process + 2 workers against the GCS emulator: {seconds:.1f} s")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "default credentials" not in result.stderr.lower()
    assert len((tmp_path / "scan.csv").read_text().splitlines()) == 1 + 3


def test_anonymous_s3_sends_unsigned_requests(s3, stores):
    """--anonymous-access: no AWS credentials looked up or needed (moto accepts unsigned
    requests like a public bucket does)."""
    options = PipelineOptions([f"--s3_endpoint_url={s3.endpoint}", "--anonymous-access",
                               f"--s3_region_name={ss.S3_REGION}"])
    path = stores["s3"][0] + "a.dcm"
    with ranged.open_ranged(path, options) as stream:
        assert stream.read(132)[128:] == b"DICM"
    from botocore import UNSIGNED

    assert storage.client("s3", options).meta.config.signature_version is UNSIGNED
    FileSystems.set_options(options)
    storage.prepare_filesystems(options)  # Beam's own client, used directly here
    assert FileSystems.match([path])[0].metadata_list


# --------------------------------------------------------------------------------------
# Bucket state lifecycle: what runs leave behind
# --------------------------------------------------------------------------------------

def objects_under(prefix: str, args) -> list[str]:
    FileSystems.set_options(PipelineOptions(list(args)))
    return sorted(meta.path[len(prefix):]
                  for meta in FileSystems.match([prefix + "**"])[0].metadata_list)


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_three_runs_leave_no_more_objects_than_the_first(scheme, stores, archive, local_run):
    """Run, run --incremental, run --incremental into one bucket folder; between the
    first two, a killed run's leftovers appear (a temp folder and a generation, and a
    generation whose name is a prefix of the next one's). The third run leaves no more
    objects than the first, and the leftovers are gone."""
    prefix, args = stores[scheme]
    out = f"{scheme}://{BUCKET}/three-{uuid.uuid4().hex[:6]}/"
    counts = []
    assert run_cli(prefix, "-o", out + "scan.csv", "--quiet", *args) == 0
    first = objects_under(out, args)
    counts.append(len(first))
    (generation,) = {path.split("/")[1] for path in first if path.startswith("scan.state/gen-")}
    leftovers = [".scan.tmp-20000101-000000-dead/table-x.csv",
                 "scan.state/gen-20000101-000000-dead/rows-x.parquet",
                 "scan.state/gen-20000101-000000-dead/settings.json",
                 f"scan.state/{generation[:-2]}/settings.json"]  # gen-...-abcdef vs gen-...-abcd
    FileSystems.set_options(PipelineOptions(list(args)))
    for name in leftovers:
        with FileSystems.create(out + name) as stream:
            stream.write(b"left by a killed run\n")
    for _ in range(2):
        assert run_cli(prefix, "-o", out + "scan.csv", "--quiet", "--incremental", *args) == 0
        counts.append(len(objects_under(out, args)))
    last = objects_under(out, args)
    print(f"\n{scheme}: objects after each run: {counts}")
    assert counts[2] <= counts[0], counts
    assert not set(leftovers) & set(last)
    assert not [path for path in last if ".tmp-" in path or path.endswith(".partial")
                or path.endswith(".lock")]
    state = {path.split("/")[1] for path in last if path.startswith("scan.state/")}
    assert len(state) == 2 and "CURRENT" in state, state
    got = read_bytes(out + "scan.csv", args)
    assert got == expected(local_run, ".csv", archive, prefix)

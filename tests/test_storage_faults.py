"""Storage faults: a proxy on 127.0.0.1 in front of the GCS and S3 test servers answers
a share of the requests (listing, reading and writing) with 429 or 503 (with and without
Retry-After), resets the connection, cuts the body in half or answers late (GCS writes:
429, 503 and delays only, see README "What happens when things fail" for why). The run
finishes with outputs byte-identical to a clean run's, within a bounded time; an object
failing every request is its error row."""

from __future__ import annotations

import csv
import os
import re
import time

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import storage_servers as ss
from tests.conftest import copy_pydicom_file, run_cli, write_dicom
from transforms.inputs import storage

BUCKET = "faults"
RATE = 0.25
FILE_TIMEOUT = 15
TABLES = (".csv", ".errors.csv", ".skipped.csv")


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    with ss.loopback_only():
        yield


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "archive"
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "chrGreek.dcm", "JPEG2000.dcm"):
        copy_pydicom_file(name, root / "pydicom")
    for index in range(6):
        write_dicom(root / "made" / f"{index}.dcm", PatientID=f"F{index}")
    (root / "notes.txt").write_text("not DICOM\n")
    (root / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")
    return str(root)


def upload(local_root: str, prefix: str, options) -> None:
    FileSystems.set_options(options)
    for folder, _, names in os.walk(local_root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as source, FileSystems.create(
                    prefix + os.path.relpath(path, local_root)) as out:
                out.write(source.read())
    FileSystems.set_options(None)


@pytest.fixture(scope="module")
def servers(archive):
    """{scheme: (server, flavor, args for an endpoint)} with the archive uploaded."""
    gcs = ss.start_gcs_emulator(bucket=BUCKET)
    s3 = ss.start_moto_server(bucket=BUCKET)
    # The emulator's environment, and Beam's credential cache filled as "none" (another
    # module's clean-up may have reset it): no metadata-server lookup from this process.
    previous = ss.apply_gcs_emulator_env(gcs.endpoint)
    storage.prepare_filesystems()
    try:
        upload(archive, f"gs://{BUCKET}/archive/", PipelineOptions([]))
        upload(archive, f"s3://{BUCKET}/archive/", PipelineOptions(ss.s3_pipeline_args(s3.endpoint)))
        yield {"gs": (gcs, "gcs"), "s3": (s3, "s3")}
    finally:
        ss.restore_env(previous)
        ss.reset_beam_gcp_credentials_lookup()
        gcs.stop()
        s3.stop()


def filled_rows(table: str) -> dict:
    """{DicomPath: its non-empty cells}: a row, whatever columns the other files add."""
    with open(table, newline="") as source:
        return {row["DicomPath"]: {name: value for name, value in row.items() if value}
                for row in csv.DictReader(source)}


def run_through(scheme, endpoint, out, *extra, source=None) -> float:
    """One run that reaches the ``scheme`` test server via ``endpoint``: of the bucket
    archive (listing and reading) into ``out``, or of ``source`` into ``out`` (writing,
    when ``out`` is in the bucket); returns its seconds."""
    args = ss.s3_pipeline_args(endpoint) if scheme == "s3" else []
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    if scheme == "gs":
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    started = time.monotonic()
    try:
        assert run_cli(source or f"{scheme}://{BUCKET}/archive/", "-o", out, "--quiet",
                       *args, *extra) == 0
        return time.monotonic() - started
    finally:
        if scheme == "gs":
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        FileSystems.set_options(None)


def clean_run(scheme, server, tmp_path) -> tuple[str, str, float]:
    """(the clean run's table, where the faulty run's goes, the clean run's seconds)."""
    clean_out = str(tmp_path / "clean" / "scan.csv")
    faulty_out = str(tmp_path / "faulty" / "scan.csv")
    os.makedirs(os.path.dirname(clean_out))
    os.makedirs(os.path.dirname(faulty_out))
    return clean_out, faulty_out, run_through(scheme, server.endpoint, clean_out)


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_faulty_storage_gives_the_clean_runs_bytes(scheme, servers, tmp_path, capsys):
    server, flavor = servers[scheme]
    clean_out, faulty_out, clean_seconds = clean_run(scheme, server, tmp_path)
    with ss.FaultProxy(server.port, flavor, rate=RATE) as proxy:
        faulty_seconds = run_through(scheme, proxy.endpoint, faulty_out)
    injected = sum(proxy.counts.values())
    for suffix in TABLES:
        with open(clean_out[: -len(".csv")] + suffix, "rb") as clean, \
                open(faulty_out[: -len(".csv")] + suffix, "rb") as faulty:
            assert faulty.read() == clean.read(), suffix
    with capsys.disabled():
        print(f"\n{scheme}: {proxy.requests} requests, faults injected {proxy.counts}, "
              f"clean {clean_seconds:.1f} s, faulty {faulty_seconds:.1f} s")
    # Every kind was injected, on a real share of the requests (13 objects, a listing).
    assert all(proxy.counts.values()), proxy.counts
    assert proxy.requests >= 15 and injected >= 0.15 * proxy.requests, proxy.counts


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_an_object_that_always_fails_is_its_error_row(scheme, servers, tmp_path, capsys):
    """One object answers 503 to every request: the client retries it until the
    per-file limit (``--file-timeout``, shortened here from its 60 s default) and it is a
    ``Timeout`` error row; every other file's row is the clean run's, the run ends."""
    server, flavor = servers[scheme]
    clean_out, faulty_out, clean_seconds = clean_run(scheme, server, tmp_path)
    with ss.FaultProxy(server.port, flavor, rate=0, always={"MR_small": "503"}) as proxy:
        faulty_seconds = run_through(scheme, proxy.endpoint, faulty_out,
                                     "--file-timeout", str(FILE_TIMEOUT))
    with capsys.disabled():
        print(f"\n{scheme}: {proxy.requests} requests, {proxy.always_counts['503']} of them "
              f"503 for MR_small.dcm, clean {clean_seconds:.1f} s, "
              f"faulty {faulty_seconds:.1f} s")
    clean_rows, faulty_rows = filled_rows(clean_out), filled_rows(faulty_out)
    assert [path for path in clean_rows if path not in faulty_rows] == [
        f"{scheme}://{BUCKET}/archive/pydicom/MR_small.dcm"], faulty_rows.keys()
    assert all(faulty_rows[path] == clean_rows[path] for path in faulty_rows)
    with open(faulty_out[: -len(".csv")] + ".errors.csv") as errors:
        rows = [row for row in errors.read().splitlines() if "MR_small.dcm" in row]
    assert len(rows) == 1 and f"{scheme}://{BUCKET}/archive/pydicom/MR_small.dcm,Timeout," \
        in rows[0], rows
    assert proxy.always_counts["503"] > 1  # retried before giving up


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_read_still_refused_after_the_retries_is_unreadable(scheme, servers, monkeypatch):
    """Once the client's retries are spent (fewer here, to be quick: the per-file limit
    usually comes first, as above), an object answering 503 to every request is an
    ``Unreadable`` error that says the service refused, not a header that did not parse."""
    from transforms.inputs.ranged import open_ranged
    from transforms.reading.errors import classify

    server, flavor = servers[scheme]
    monkeypatch.setattr(storage, "S3_MAX_ATTEMPTS", 2)
    monkeypatch.setattr(storage, "GCS_RETRY_SECONDS", 3.0)
    with ss.FaultProxy(server.port, flavor, rate=0, always={"MR_small": "503"}) as proxy:
        if scheme == "gs":
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)
        options = PipelineOptions(ss.s3_pipeline_args(proxy.endpoint) if scheme == "s3" else [])
        with pytest.raises(OSError) as refused:
            open_ranged(f"{scheme}://{BUCKET}/archive/pydicom/MR_small.dcm", options).read(128)
    record = classify(refused.value)
    assert record.type == "Unreadable", record
    assert "the storage service refused the read" in record.message and "503" in record.message
    assert proxy.always_counts["503"] >= 2, proxy.always_counts  # retried, then gave up


# The GCS emulator answers the status query of an interrupted resumable upload with 404,
# so a write the proxy resets or cuts cannot resume against it (README, "Storage faults").
WRITE_KINDS = {"s3": ss.FaultProxy.KINDS, "gs": ("429", "503", "delay")}


def bucket_objects(scheme, server, prefix: str) -> dict:
    """{name below ``prefix``: bytes} of the test bucket, read past the proxy."""
    if scheme == "s3":
        import boto3

        s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix) for item in page.get("Contents", [])]
        return {key[len(prefix):]: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                for key in keys}
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    client = gcs.Client(project="test", credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": server.endpoint})
    bucket = client.bucket(BUCKET)
    # By name: the listing's media links name the host an object was uploaded through
    # (the proxy, gone by now).
    return {blob.name[len(prefix):]: bucket.blob(blob.name).download_as_bytes()
            for blob in client.list_blobs(BUCKET, prefix=prefix)}


def shape(key: str) -> str:
    """An output object's name without its generation's and shards' ids."""
    return re.sub(r"gen-[0-9-]+-[0-9a-f]+|-[0-9a-f]{32}", "*", key)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_faulty_writes_give_the_clean_runs_bytes(scheme, archive, servers, capsys):
    """The output goes to the bucket through the proxy (a share of its requests
    faulted): the objects written are the clean run's, byte for byte, and nothing else
    is left."""
    server, flavor = servers[scheme]
    clean_seconds = run_through(scheme, server.endpoint,
                                f"{scheme}://{BUCKET}/out-clean/scan.csv", source=archive)
    with ss.FaultProxy(server.port, flavor, rate=RATE, seed=7,
                       kinds=WRITE_KINDS[scheme]) as proxy:
        faulty_seconds = run_through(scheme, proxy.endpoint,
                                     f"{scheme}://{BUCKET}/out-faulty/scan.csv", source=archive)
    clean = bucket_objects(scheme, server, "out-clean/")
    faulty = bucket_objects(scheme, server, "out-faulty/")
    with capsys.disabled():
        print(f"\n{scheme} writes: {proxy.requests} requests, faults injected {proxy.counts}, "
              f"clean {clean_seconds:.1f} s, faulty {faulty_seconds:.1f} s, "
              f"objects {sorted(faulty)}")
    # The tables byte for byte; the state, report and summary name a generation and a
    # time of their own, so only their shapes: one generation, no temporary or partial
    # object left by a retried upload.
    tables = [key for key in clean if key.endswith(".csv")]
    assert len(tables) == 5 and all(faulty.get(key) == clean[key] for key in tables)
    assert sorted(map(shape, faulty)) == sorted(map(shape, clean))
    assert all(proxy.counts[kind] for kind in WRITE_KINDS[scheme]), proxy.counts

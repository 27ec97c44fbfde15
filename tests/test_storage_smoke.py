"""What Beam itself does with the storage servers, and why transforms/inputs/storage.py exists.

GCS = gcp-storage-emulator, S3 = moto server, both subprocesses on 127.0.0.1 (see
storage_servers.py). These pin down the Beam behaviour the product works around, so a
Beam upgrade that changes it shows up here first.
"""

import os
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

import storage_servers as ss
from transforms.inputs import checks, ranged, storage
from transforms.output.cleanup import delete_tree

BUCKET = "smoke-bucket"


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    with ss.loopback_only():
        yield


@pytest.fixture(scope="module")
def gcs():
    srv = ss.start_gcs_emulator(bucket=BUCKET)
    previous = ss.apply_gcs_emulator_env(srv.endpoint)
    try:
        yield srv
    finally:
        ss.restore_env(previous)
        ss.reset_beam_gcp_credentials_lookup()
        srv.stop()


@pytest.fixture(scope="module")
def s3():
    srv = ss.start_moto_server(bucket=BUCKET)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(params=["gs", "s3"])
def store(request, gcs, s3):
    """(scheme, server) with FileSystems options set for that store."""
    server = s3 if request.param == "s3" else gcs
    args = ss.s3_pipeline_args(s3.endpoint) if request.param == "s3" else []
    FileSystems.set_options(PipelineOptions(args))
    yield request.param, server
    FileSystems.set_options(None)


def _write(path, data):
    with FileSystems.create(path) as f:
        f.write(data)


def _prefix(scheme):
    return "%s://%s/%s" % (scheme, BUCKET, uuid.uuid4().hex[:8])


def test_create_match_open_rename_delete(store):
    scheme, _ = store
    prefix = _prefix(scheme)
    a, b = prefix + "/dir/a.dcm", prefix + "/dir/sub/b.dcm"
    _write(a, b"A" * 1000)
    _write(b, b"B" * 2345)

    found = FileSystems.match([prefix + "/**"])[0].metadata_list
    assert sorted((m.path, m.size_in_bytes) for m in found) == [(a, 1000), (b, 2345)]
    one = FileSystems.match([prefix + "/dir/*"])[0].metadata_list  # '*' stops at '/'
    assert [m.path for m in one] == [a]

    c = prefix + "/renamed/c.dcm"
    FileSystems.rename([a], [c])  # copy + delete on buckets
    assert not FileSystems.exists(a)
    with FileSystems.open(c) as f:
        assert f.read() == b"A" * 1000
    # A "folder" is no object: deleting it by name leaves its objects behind, which is
    # why transforms.output.cleanup.delete_tree lists and deletes them.
    assert not FileSystems.exists(prefix + "/renamed")
    delete_tree(prefix)
    assert FileSystems.match([prefix + "/**"])[0].metadata_list == []


def test_filesystems_open_downloads_whole_objects(store):
    """FileSystems.open buffers 16 MiB (Beam's S3IO asks for the open-ended range
    'bytes=0-'): reading 4 KB transfers the whole object. open_ranged transfers a block."""
    scheme, server = store
    size = 600 * 1024
    path = _prefix(scheme) + "/big.bin"
    data = os.urandom(size)
    _write(path, data)
    with ss.CountingProxy(server.port) as proxy:
        previous = os.environ["STORAGE_EMULATOR_HOST"]
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.endpoint
        options = PipelineOptions(
            ss.s3_pipeline_args(proxy.endpoint) if scheme == "s3" else [])
        FileSystems.set_options(options)

        def transferred(opener):
            time.sleep(0.1)
            proxy.reset()
            with opener() as f:
                assert f.read(4096) == data[:4096]
            time.sleep(0.3)  # let the proxy's pumps finish counting
            return proxy.down

        try:
            whole = transferred(lambda: FileSystems.open(path))
            ranged_bytes = transferred(lambda: ranged.open_ranged(path, options))
        finally:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
    print("\n%s: FileSystems.open %d bytes, open_ranged %d bytes (object %d)"
          % (scheme, whole, ranged_bytes, size))
    if scheme == "s3":
        assert whole > size
    # gs: Beam's reader downloads from the object's mediaLink, which the emulator
    # points at its own port, past the proxy; only the metadata GET is counted.
    assert ranged_bytes < ranged.FIRST_BLOCK + 8 * 1024


def test_missing_bucket(store):
    """gs: listing a missing bucket raises; s3: Beam returns an empty match silently,
    hence the bucket check in checks.check_input."""
    scheme, _ = store
    pattern = "%s://no-such-bucket-%s/**" % (scheme, uuid.uuid4().hex[:6])
    if scheme == "gs":
        with pytest.raises(BeamIOError, match="List operation failed"):
            FileSystems.match([pattern])
    else:
        assert FileSystems.match([pattern])[0].metadata_list == []
    with pytest.raises(storage.StorageError, match="does not exist"):
        checks.check_input(pattern.replace("**", ""))
    with pytest.raises(FileNotFoundError):
        ranged.open_ranged(pattern.replace("**", "x.dcm")).read(1)


def test_object_deleted_between_match_and_read(store):
    """Beam raises google's NotFound (not an OSError) for gs, FileNotFoundError for s3;
    open_ranged raises FileNotFoundError for both."""
    scheme, _ = store
    path = _prefix(scheme) + "/gone.dcm"
    _write(path, b"x" * 100)
    [meta] = FileSystems.match([path])[0].metadata_list
    FileSystems.delete([path])
    if scheme == "gs":
        from google.api_core.exceptions import NotFound as expected
    else:
        expected = FileNotFoundError
    with pytest.raises(expected):
        FileSystems.open(meta.path)
    with pytest.raises(FileNotFoundError):
        ranged.open_ranged(meta.path).read(1)


def test_direct_runner_tries_prism(monkeypatch):
    """--runner=DirectRunner in Beam 2.77 first tries PrismRunner (which downloads a Go
    binary from GitHub): why the CLI picks FnApiRunner itself for local runs."""
    from apache_beam.runners.portability import prism_runner
    calls = []

    def fake_run(self, pipeline, options):
        calls.append(True)
        raise RuntimeError("prism disabled in tests")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", fake_run)
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        assert_that(p | beam.Create([1, 2]) | beam.Map(lambda x: x * 2), equal_to([2, 4]))
    assert calls, "DirectRunner no longer tries Prism first"

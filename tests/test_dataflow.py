"""Dataflow, offline: the job a ``gs://`` run would submit, built without a cloud account.

``--dry_run`` makes the DataflowRunner stop right before it talks to the service. The
test then does what submission would do next, against a local staging folder: stages
the resources and writes the job description (``--dataflow_job_file``). It checks the
job's steps, that the staged package is this project built from ``setup.py`` with its
dependencies declared, and that a worker installing it can import the transforms.
The bucket is a GCS emulator on 127.0.0.1 (the CLI checks the archive and output
before submitting); every other connection is refused, so nothing here can reach the
network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions
from apache_beam.portability import common_urns

from beam_pipeline.arguments import parse
from beam_pipeline.cli import main
from beam_pipeline.local_runner import make_runner
from beam_pipeline.options import DicomExtractOptions
from beam_pipeline.pipeline import build_pipeline
from tests import storage_servers
from tests.dicomweb_servers import Orthanc
from tests.test_dicomweb import require_orthanc
from tests.conftest import pydicom_file
from transforms.report.summary import OutputPaths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "demo-bucket"
RUN = "ExtractDicomMetadata/"
STEPS = tuple(RUN + step for step in (
    "Discover", "Extract/Headers", "Extract/BoundCells", "StoreRows/Spill",
    "WriteTables/Columns", "WriteTables/TextParts/WritePart", "WriteTables/TextParts/PlacePart",
    "WriteTables/Finalize", "Report/Summary/Write",
    "Report/HtmlReport/Write", "Commit/CommitState", "Commit/Cleanup"))


@pytest.fixture
def offline(monkeypatch):
    """No credentials lookup (it would probe the GCE metadata server) and no sockets
    to anything but this machine."""
    from apache_beam.internal.gcp import auth

    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def local_only(host):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access to {host!r} during an offline Dataflow build")

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            local_only(address[0])
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        local_only(host)
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


@pytest.fixture(scope="module")
def gcs_bucket():
    """gs://demo-bucket on a local GCS emulator (127.0.0.1), with one archive file:
    the CLI lists the archive and writes a probe object before it submits, and the
    pipeline prepares its state folder next to the output, all at submission time."""
    server = storage_servers.start_gcs_emulator(bucket=BUCKET)
    previous = storage_servers.apply_gcs_emulator_env(server.endpoint)
    try:
        FileSystems.set_options(None)
        with FileSystems.create("gs://demo-bucket/archive/p1/CT_small.dcm") as out:
            out.write(open(pydicom_file("CT_small.dcm"), "rb").read())
        yield BUCKET
    finally:
        FileSystems.set_options(None)
        storage_servers.restore_env(previous)
        storage_servers.reset_beam_gcp_credentials_lookup()
        server.stop()


def offline_job(arguments: list, tmp_path):
    """(job, job description dict, staging folder) for the documented Dataflow command
    with ``arguments`` (inputs and output), built and staged without the service."""
    job_file = tmp_path / "job.json"
    inputs, options, _ = parse([
        *arguments, "--config", "run_configs/dataflow.yaml",
        "--project=demo-project", "--region=europe-west1",
        f"--temp_location=gs://{BUCKET}/tmp", "--job_name=dicom-meta-offline",
        "--dry_run=True", f"--dataflow_job_file={job_file}",
    ])
    # What launch.run does, up to submission.
    FileSystems.set_options(options)
    extract = options.view_as(DicomExtractOptions)
    paths = OutputPaths.for_output(extract.output, "offline", extract.format.split(","))
    pipeline = beam.Pipeline(runner=make_runner(options), options=options)
    build_pipeline(pipeline, inputs, extract, paths, 0.0)
    job = pipeline.run().job  # --dry_run: built, not submitted

    # What DataflowApplicationClient.create_job does before calling the service,
    # with a local staging folder instead of gs://.../staging.
    from apache_beam.runners.dataflow.internal import apiclient

    staging = tmp_path / "staging"
    staging.mkdir()
    job.options.view_as(GoogleCloudOptions).staging_location = str(staging)
    # No credentials for the API client (Beam 2.70's would otherwise probe the GCE
    # metadata server even when the credentials lookup above found none).
    job.options.view_as(GoogleCloudOptions).no_auth = True
    apiclient.DataflowApplicationClient(job.options, str(staging)).create_job_description(job)
    job_file.write_text(job.json())
    assert job.options.view_as(DebugOptions).dataflow_job_file == str(job_file)
    return job, json.loads(job_file.read_text()), staging


@pytest.fixture
def dataflow_job(gcs_bucket, offline, monkeypatch, tmp_path):
    """(job, job description dict, staging folder) for the documented Dataflow command."""
    monkeypatch.chdir(ROOT)  # run_configs/dataflow.yaml names ./setup.py, as users run it
    return offline_job([f"gs://{gcs_bucket}/archive/", "-o", f"gs://{gcs_bucket}/out/scan.csv"],
                       tmp_path)


def test_job_has_the_pipelines_steps_and_options(dataflow_job):
    job, description, _ = dataflow_job
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert set(STEPS) <= names
    pardos = {
        t.unique_name for t in job.proto_pipeline.components.transforms.values()
        if t.spec.urn == common_urns.primitives.PAR_DO.urn
    }
    assert {RUN + "Extract/Headers", RUN + "StoreRows/Spill"} <= {
        n.split("/ParDo(")[0] for n in pardos}
    options = {
        item["key"]: item["value"]
        for item in description["environment"]["sdkPipelineOptions"]["display_data"]
    }
    assert options["output"] == "gs://demo-bucket/out/scan.csv"
    assert options["setup_file"] == "./setup.py"
    assert options["max_num_workers"] == 50  # from run_configs/dataflow.yaml
    assert description["name"] == "dicom-meta-offline"
    pool = description["environment"]["workerPools"][0]
    assert pool["workerHarnessContainerImage"].endswith(
        f"_sdk:{beam.__version__}"
    )


def test_staged_package_is_this_project_with_its_dependencies(dataflow_job, tmp_path):
    _, description, staging = dataflow_job
    packages = {p["name"]: p["location"] for p in description["environment"]["workerPools"][0]["packages"]}
    assert packages["workflow.tar.gz"] == str(staging / "workflow.tar.gz")
    sdist = staging / "workflow.tar.gz"
    with tarfile.open(sdist) as tar:
        staged = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        requires = next(
            tar.extractfile(m).read().decode() for m in tar.getmembers()
            if m.name.endswith(".egg-info/requires.txt")
        )
    for package in ("beam_pipeline", "transforms"):
        modules = {f"{package}/{f}" for f in os.listdir(os.path.join(ROOT, package)) if f.endswith(".py")}
        assert modules <= staged, modules - staged
    for dependency in ("apache-beam", "pydicom", "pyarrow", "pyyaml"):
        assert dependency in requires

    # A worker pip-installs the staged package; what that installs must then import
    # the transforms. `setup.py build` lays out exactly the declared packages, as an
    # install would (pip itself would need the `wheel` package to build offline).
    with tarfile.open(sdist) as tar:
        root = tar.getnames()[0].split("/")[0]
        tar.extractall(tmp_path / "worker", filter="data")
    built = tmp_path / "worker" / "build"
    subprocess.run([sys.executable, "setup.py", "-q", "build", "--build-base", str(built)],
                   check=True, cwd=tmp_path / "worker" / root, capture_output=True)
    lib = built / "lib"
    probe = ("import beam_pipeline.cli, beam_pipeline.pipeline, transforms.reading.extract, sys; "
             "assert transforms.reading.extract.__file__.startswith(sys.argv[1]), transforms.reading.extract.__file__")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(lib)
    subprocess.run([sys.executable, "-c", probe, str(lib)], check=True, cwd=tmp_path, env=env)


def test_dicomweb_job_with_basic_auth(gcs_bucket, offline, monkeypatch, tmp_path):
    """A DICOMweb input (a real Orthanc on 127.0.0.1, basic authentication, the password
    in a file in the bucket) builds and stages the Dataflow job: QIDO-RS listing, the
    series spread over workers, one metadata request each. The password is in no option,
    step name or step of the job: each step's serialized function names the file, which
    the workers read themselves."""
    require_orthanc()
    password = "dataflow-offline-password-7c1e"
    password_file = f"gs://{gcs_bucket}/secrets/pacs-password"
    FileSystems.set_options(None)
    with FileSystems.create(password_file) as out:
        out.write(password.encode() + b"\n")
    server = Orthanc(str(tmp_path / "orthanc"), users={"reader": password})
    try:
        server.upload(open(pydicom_file("CT_small.dcm"), "rb").read())
        monkeypatch.chdir(ROOT)
        job, description, _ = offline_job(
            [server.input, "-o", f"gs://{gcs_bucket}/web/scan.csv", "--dicomweb-user", "reader",
             "--dicomweb-password-file", password_file], tmp_path)
    finally:
        server.stop()
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert RUN + "ListDicomWeb" in names
    assert any(name.startswith(RUN + "DicomWeb/") for name in names)
    assert {RUN + "StoreRows/SpillWeb", RUN + "WriteTables/TextParts/WritePart"} <= names
    assert password not in json.dumps(description)
    assert password not in " ".join(sorted(names))
    steps = serialized_steps(job.proto_pipeline)
    naming_the_file = {name for name, data in steps.items() if password_file.encode() in data}
    assert {RUN + "ListDicomWeb/Studies/ParDo(ListStudies)", RUN + "ListDicomWeb/Series/ParDo("
            "ListSeries)", RUN + "DicomWeb/ReadSeries/ParDo(ReadSeries)"} <= naming_the_file
    assert not [name for name, data in steps.items() if password.encode() in data]


def serialized_steps(proto_pipeline) -> dict:
    """Each ParDo's serialized function as the runner ships it, uncompressed: Beam's
    pickler writes base64 of bz2 (or zlib) of the pickle. A format this does not know
    fails here rather than passing unread."""
    import base64
    import bz2
    import zlib

    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    steps = {}
    for transform in proto_pipeline.components.transforms.values():
        if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        if payload.do_fn.urn != python_urns.PICKLED_DOFN_INFO:  # Beam's own, no data
            continue
        packed = base64.b64decode(payload.do_fn.payload, validate=True)
        steps[transform.unique_name] = (bz2.decompress(packed) if packed[:3] == b"BZh"
                                        else zlib.decompress(packed))
    assert len(steps) > 20
    return steps


def test_dicomweb_secret_from_this_machine_is_refused_on_dataflow(
        gcs_bucket, offline, monkeypatch, tmp_path, capsys):
    """Dataflow's workers see neither this machine's files nor its environment: a
    password given that way is one line and exit 2, before anything is built."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DICOMWEB_TEST_PASSWORD", "never-shipped")
    (tmp_path / "token").write_text("never-shipped-either")
    common = ["--config", "run_configs/dataflow.yaml", "--project=demo-project",
              "--region=europe-west1", f"--temp_location=gs://{BUCKET}/tmp", "--dry_run=True"]
    for secret in (["--dicomweb-user", "reader", "--dicomweb-password-env", "DICOMWEB_TEST_PASSWORD"],
                   ["--dicomweb-token-file", str(tmp_path / "token")]):
        assert main(["dicomweb+http://127.0.0.1:9/dicom-web", "-o",
                     f"gs://{gcs_bucket}/refused/scan.csv", *secret, *common]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "on Dataflow the workers read the" in err, err
        assert "gs://BUCKET/FILE" in err and "never-shipped" not in err
    assert not FileSystems.match([f"gs://{gcs_bucket}/refused/*"])[0].metadata_list


def test_deidentified_job_reads_its_key_from_the_bucket(gcs_bucket, offline, monkeypatch,
                                                         tmp_path, capsys):
    """``--deidentify`` on Dataflow: the key file is in a bucket, and the staged job's
    steps name the file, never hold the key. A random key, or a key file on this
    machine, is one line and exit 2: either would have to travel inside the job."""
    key = "7d" * 32
    key_file = f"gs://{gcs_bucket}/secrets/site.key"
    FileSystems.set_options(None)
    with FileSystems.create(key_file) as out:
        out.write(key.encode() + b"\n")
    monkeypatch.chdir(ROOT)
    job, description, _ = offline_job(
        [f"gs://{gcs_bucket}/archive/", "-o", f"gs://{gcs_bucket}/deid/scan.csv",
         "--deidentify", "--pseudonym-key-file", key_file, "--pseudonymize-paths"], tmp_path)
    steps = serialized_steps(job.proto_pipeline)
    assert RUN + "Extract/Headers" in {name.rsplit("/", 1)[0] for name in steps}
    assert any(name.startswith(RUN + "Extract/") for name, data in steps.items()
               if key_file.encode() in data)
    assert not [name for name, data in steps.items() if key.encode() in data]
    assert key not in json.dumps(description)

    (tmp_path / "local.key").write_text(key)
    common = ["--config", "run_configs/dataflow.yaml", "--project=demo-project",
              "--region=europe-west1", f"--temp_location=gs://{BUCKET}/tmp", "--dry_run=True"]
    for flags in ([], ["--pseudonym-key-file", str(tmp_path / "local.key")]):
        assert main([f"gs://{gcs_bucket}/archive/", "-o", f"gs://{gcs_bucket}/refused/scan.csv",
                     "--deidentify", *flags, *common]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--pseudonym-key-file gs://BUCKET/FILE" in err, err
        assert key not in err
    assert not FileSystems.match([f"gs://{gcs_bucket}/refused/*"])[0].metadata_list

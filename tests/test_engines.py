"""The real pipeline on real engines: a standalone Flink cluster and Prism.

Each engine runs the command line exactly as docs/engines.md tells users to
(``--config run_configs/<engine>.yaml`` plus the machine-specific flags), in a
child process this test starts and waits for by PID. Its CSV, errors and skipped
files must equal the local FnApiRunner's byte for byte. A DICOMweb source (Orthanc
with its DICOMweb plugin on a free 127.0.0.1 port, ``tests/dicomweb_servers.py``) runs
on Flink the same way: the LOOPBACK SDK harness reaches it on 127.0.0.1; after the
server changes, an ``--incremental`` run on Flink reuses the unchanged series and
equals a fresh local run.

The engines come from ``bash .ci/install_engines.sh`` (run by ``.ci/install``); when
they (or Orthanc) are missing these tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import pydicom
import pytest

from tests.conftest import copy_pydicom_file, pydicom_file, run_cli, write_dicom
from benchmarks.make_archive import generate
from tests.dicomweb_servers import FaultyProxy, Orthanc, orthanc_installed
from tests.engine_runs import ROOT, RUN_TIMEOUT, group_alive, run_cli_process
from tests.engines import FlinkCluster, beam_flink_version, flink_job_server_jar, prism_binary

COMPARED = ("scan.csv", "scan.errors.csv", "scan.skipped.csv", "scan.series.csv",
            "scan.studies.csv")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A handful of real DICOM files, a non-DICOM file and two broken .dcm files."""
    root = tmp_path_factory.mktemp("engine-archive")
    copy_pydicom_file("CT_small.dcm", root / "p1")
    copy_pydicom_file("MR_small.dcm", root / "p1")
    copy_pydicom_file("rtplan.dcm", root / "p2")
    copy_pydicom_file("ExplVR_BigEndNoMeta.dcm", root / "p2")  # no preamble, big endian
    copy_pydicom_file("CT_small.dcm", root / "p3", "IM0001")  # no extension
    (root / "notes.txt").write_text("not a dicom file\n")
    data = open(pydicom_file("CT_small.dcm"), "rb").read()
    (root / "truncated.dcm").write_bytes(data[:1000])
    (root / "dicm_garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(200)))
    return root


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory):
    """The local runner's output folder (FnApiRunner, the default), the nested file too."""
    out = tmp_path_factory.mktemp("reference")
    assert run_cli(archive, "-o", out / "scan.csv", "--quiet", "--format", "csv,nested") == 0
    summary = json.loads((out / "scan.summary.json").read_text())
    assert (summary["rows"], summary["errors"], summary["non_dicom_skipped"]) == (5, 2, 1)
    return out


def assert_same_output(reference, out) -> None:
    for name in COMPARED:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    counts = ("files_matched", "rows", "errors", "non_dicom_skipped", "columns", "accounted_for")
    expected = json.loads((reference / "scan.summary.json").read_text())
    actual = json.loads((out / "scan.summary.json").read_text())
    assert {k: actual[k] for k in counts} == {k: expected[k] for k in counts}
    # The temporary shard folder is gone.
    assert not [name for name in os.listdir(out) if ".tmp-" in name]


def test_engines_are_the_python_sdks_beam_release():
    """The Flink runner in the job server jar, Prism and the Python SDK are one Beam
    release, the one setup.py pins (docs/engines.md)."""
    import apache_beam

    pin = re.search(r'"apache-beam(?:\[[a-z,]*\])?==([0-9.]+)"', open(os.path.join(ROOT, "setup.py")).read()).group(1)
    assert apache_beam.__version__ == pin
    with zipfile.ZipFile(flink_job_server_jar()) as jar:
        runner = f"META-INF/maven/org.apache.beam/beam-runners-flink-{beam_flink_version()}/pom.properties"
        assert f"version={pin}" in jar.read(runner).decode().split()
        # Built here: every Beam module but the job service is the pinned release.
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
        if "Beam-Version" in manifest:
            assert f"Beam-Version: {pin}" in manifest.splitlines()
    # Go embeds the main module's version in the binary (what `go version -m` prints).
    modules = re.findall(rb"mod\tgithub.com/apache/beam/sdks/v2\t(v[0-9.]+)", prism_binary().read_bytes())
    assert modules and set(modules) == {f"v{pin}".encode()}


@pytest.fixture(scope="module")
def flink_cluster():
    """JobManager and TaskManager as two JVMs on 127.0.0.1, stopped by PID on exit.
    No job server of our own: the run starts Beam's from --flink_job_server_jar."""
    with FlinkCluster(slots=2, job_server=False) as cluster:
        yield cluster


def test_flink_cluster_output_equals_local_runner(archive, reference, flink_cluster, tmp_path):
    finished = _finished_jobs(flink_cluster)
    run_cli_process(
        [archive, "-o", tmp_path / "scan.csv", "--quiet", "--format", "csv,nested",
         "--config", "run_configs/flink.yaml",
         f"--flink_master={flink_cluster.flink_master}",  # overrides the config's port
         f"--flink_job_server_jar={flink_cluster.job_server_jar}",
         # Several shards spread over two subtasks, so the final merge interleaves (the
         # nested file's rows are converted shard by shard, then merged too).
         "--parallelism=2", "--rows_per_shard=2"],
        tmp_path / "run.log",
    )
    assert_same_output(reference, tmp_path)
    name = "scan.nested.parquet"
    assert (tmp_path / name).read_bytes() == (reference / name).read_bytes()
    # The job really ran on the standalone cluster, not on an embedded one.
    assert _finished_jobs(flink_cluster) == finished + 1
    # Quiet: nothing on the console (the LOOPBACK worker's hang-ups included), and no
    # stack trace in the cluster's logs but the ones Beam cannot avoid.
    printed = (tmp_path / "run.log").read_text(errors="replace")
    assert "Traceback" not in printed and "ERROR" not in printed, printed[-3000:]
    assert not flink_cluster.unexplained_stack_traces(), flink_cluster.logs(3000)


def test_flink_writes_the_local_runners_nested_dataset(archive, reference, flink_cluster,
                                                        tmp_path):
    """-o FOLDER/ --format nested: the parts are written by the cluster's subtasks."""
    flags = ["--format", "csv,nested", "--rows-per-part", "2"]
    local = tmp_path / "local"
    assert run_cli(archive, "-o", f"{local}/", "--quiet", *flags) == 0
    run_cli_process(
        [archive, "-o", f"{tmp_path / 'scan'}/", "--quiet", *flags,
         "--config", "run_configs/flink.yaml",
         f"--flink_master={flink_cluster.flink_master}",
         f"--flink_job_server_jar={flink_cluster.job_server_jar}",
         "--parallelism=2", "--rows_per_shard=2"],
        tmp_path / "run.log",
    )
    assert (tmp_path / "scan.csv").read_bytes() == (reference / "scan.csv").read_bytes()
    names = sorted(os.listdir(local))
    assert names == [f"part-0000{n}-of-00003.parquet" for n in range(3)]  # 5 rows
    assert sorted(os.listdir(tmp_path / "scan")) == names
    for name in names:
        assert (tmp_path / "scan" / name).read_bytes() == (local / name).read_bytes(), name


def _finished_jobs(cluster) -> int:
    return sum(job["state"] == "FINISHED" for job in cluster.rest("/jobs/overview")["jobs"])


def test_prism_output_equals_local_runner(archive, reference, tmp_path):
    # A wrapper that records each start of the installed binary, then runs it: proof
    # that the run used this Prism (Beam logs which one only at INFO, hidden by --quiet).
    started = tmp_path / "prism-started"
    wrapper = tmp_path / "prism"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> "{started}"\nexec "{prism_binary()}" "$@"\n')
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    run_cli_process(
        [archive, "-o", out / "scan.csv", "--quiet",
         "--config", "run_configs/prism.yaml", f"--prism_location={wrapper}",
         "--rows_per_shard=2"],
        tmp_path / "run.log",
    )
    assert_same_output(reference, out)
    assert len(started.read_text().split()) == 1
    printed = (tmp_path / "run.log").read_text(errors="replace")
    assert "ownload" not in printed
    # Quiet, as on Flink: no traceback or error line on the console.
    assert "Traceback" not in printed and "ERROR" not in printed, printed[-3000:]


# --- A real failure on a real engine ------------------------------------------------
# Enough files that extraction on the Flink cluster takes several seconds (LOOPBACK:
# 10-30 s here, on a loaded 2-core machine), so the TaskManager dies mid-extraction,
# after the first row shard is on disk and long before the last.
KILL_ARCHIVE_FILES = 1500
KILL_ROWS_PER_SHARD = 100


@pytest.fixture(scope="module")
def kill_archive(tmp_path_factory):
    """KILL_ARCHIVE_FILES small CT files written with pydicom (a few patients, series
    and instances, each file's values its own), plus one non-DICOM and one broken file."""
    root = tmp_path_factory.mktemp("kill-archive")
    for i in range(KILL_ARCHIVE_FILES):
        patient, series, instance = i % 7, i % 23, i
        write_dicom(
            root / f"patient{patient:02d}" / f"series{series:02d}" / f"IM{instance:05d}.dcm",
            PatientName=f"Doe^Patient{patient}", PatientID=f"P{patient:04d}",
            StudyDescription=f"Study {patient}", SeriesNumber=series, InstanceNumber=instance,
            SeriesDescription=f"Series {series} of {patient}", SliceThickness=f"{1 + i % 5}.5",
            ImageComments=f"file {i}",
        )
    (root / "README.txt").write_text("not a dicom file\n")
    data = (root / "patient00" / "series00" / "IM00000.dcm").read_bytes()
    (root / "patient00" / "truncated.dcm").write_bytes(data[: len(data) // 2])
    return root


@pytest.fixture(scope="module")
def kill_reference(kill_archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill-reference")
    assert run_cli(kill_archive, "-o", out / "scan.csv", "--quiet") == 0
    summary = json.loads((out / "scan.summary.json").read_text())
    # The truncated file is a row or an error (whatever pydicom makes of it): never lost.
    assert (summary["rows"] + summary["errors"], summary["non_dicom_skipped"]) == (KILL_ARCHIVE_FILES + 1, 1), summary
    return out


def shard_files(folder) -> list[str]:
    """Row shards (``rows-*``) anywhere below the output folder: the run's temporary
    and state directories, whatever their names and format."""
    return [os.path.join(d, name) for d, _, names in os.walk(folder) if d != str(folder)
            for name in names if name.startswith("rows-")]


def test_flink_job_survives_taskmanager_kill(kill_archive, kill_reference, tmp_path):
    """SIGKILL the TaskManager while the job extracts, start a new one: the job restarts
    (the cluster's restart strategy) and its output equals the local run's byte for byte."""
    # A dead TaskManager is noticed when two heartbeat RPCs in a row fail: 1 s heartbeats
    # instead of Flink's 10 s make that ~2 s. The timeout (for a TaskManager that is
    # connected but silent) stays generous for this loaded machine. Restarts follow the
    # installed cluster config, as for users.
    with FlinkCluster(slots=2, job_server=False,
                      extra_config={"heartbeat.interval": 1000, "heartbeat.timeout": 20000}) as cluster:
        out = tmp_path / "out"
        out.mkdir()
        log_path = tmp_path / "run.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "beam_pipeline", str(kill_archive), "-o", str(out / "scan.csv"),
                 "--quiet", "--config", "run_configs/flink.yaml",
                 f"--flink_master={cluster.flink_master}",
                 f"--flink_job_server_jar={cluster.job_server_jar}",
                 f"--rows_per_shard={KILL_ROWS_PER_SHARD}"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            job_id = _wait_for_running_job(cluster, proc, log_path)
            spilled = _wait_for_shards(out, proc, log_path)
            assert proc.poll() is None and _job_state(cluster, job_id) == "RUNNING", (
                "the job ended before the TaskManager could be killed: make the archive larger")
            killed_pid = cluster.kill_taskmanager()
            killed_at = time.monotonic()
            cluster.start_taskmanager()
            returncode = proc.wait(timeout=RUN_TIMEOUT)
            recovered_in = time.monotonic() - killed_at
        finally:
            if proc.poll() is None or group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log_text = log_path.read_text(errors="replace")
        assert returncode == 0, f"exit status {returncode}\n{log_text[-6000:]}\n{cluster.logs(3000)}"

        # The job (one job, the same id) failed over and finished on the new TaskManager.
        assert _job_state(cluster, job_id) == "FINISHED"
        assert [job["jid"] for job in cluster.rest("/jobs/overview")["jobs"]] == [job_id]
        history = cluster.rest(f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
        assert history, "no failure recorded: the kill did not hit the job"
        # The restart came from the cluster's strategy (the installed config), the only
        # one a Beam batch job has (docs/engines.md).
        cluster_config = {e["key"]: e["value"] for e in cluster.rest("/jobmanager/config")}
        assert cluster_config.get("restart-strategy.type") == "fixed-delay", cluster_config
        job_config = cluster.rest(f"/jobs/{job_id}/config")["execution-config"]
        assert job_config["restart-strategy"] == "Cluster level default restart strategy", job_config

    assert_same_output(kill_reference, out)
    print(f"\nkilled TaskManager pid {killed_pid} after {spilled} row shard(s); the run "
          f"finished {recovered_in:.0f} s later after {len(history)} failure(s): "
          f"{[entry['exceptionName'].rsplit('.', 1)[-1] for entry in history]}")


def _job_state(cluster, job_id: str) -> str:
    return cluster.rest(f"/jobs/{job_id}")["state"]


def _wait_for_running_job(cluster, proc, log_path, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early\n{log_path.read_text(errors='replace')[-4000:]}"
        jobs = [job for job in cluster.rest("/jobs/overview")["jobs"] if job["state"] == "RUNNING"]
        if jobs:
            return jobs[0]["jid"]
        time.sleep(0.3)
    raise TimeoutError("no running Flink job")


def _wait_for_shards(out, proc, log_path, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (
            "the run ended before any row shard appeared\n" + log_path.read_text(errors="replace")[-4000:])
        found = shard_files(out)
        if found:
            return len(found)
        time.sleep(0.1)
    raise TimeoutError(f"no row shard under {out} after {timeout}s")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """Orthanc with its DICOMweb plugin on a free 127.0.0.1 port, holding a few
    generated studies and three of pydicom's files; stopped by pid."""
    if not orthanc_installed():
        # Like the engines: missing means failing, here and in CI alike.
        pytest.fail("Orthanc with the DICOMweb plugin is not installed (.ci/install)")
    files = tmp_path_factory.mktemp("dicomweb-files")
    generate(str(files), 6, small=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        copy_pydicom_file(name, files)
    server = Orthanc(str(tmp_path_factory.mktemp("orthanc")))
    try:
        for path in sorted(files.rglob("*")):
            if path.is_file():
                assert server.upload(path.read_bytes()) == "Success", path
        yield server
    finally:
        server.stop()


def run_flink(cluster, source, out, *extra) -> None:
    """The command line on the standalone cluster (two subtasks, several row shards),
    reading ``source`` two studies a page, into ``out/scan.csv``; its log beside ``out``."""
    run_cli_process(
        [source, "-o", out / "scan.csv", "--quiet", "--dicomweb-page-size=2", *extra,
         "--config", "run_configs/flink.yaml",
         f"--flink_master={cluster.flink_master}",
         f"--flink_job_server_jar={cluster.job_server_jar}",
         "--parallelism=2", "--rows_per_shard=2"],
        out.parent / f"{out.name}.log",
    )


def metadata_requested(proxy) -> set:
    """The Series Instance UIDs whose WADO-RS metadata went through ``proxy``."""
    return {path.split("/series/")[1].split("/")[0] for path in proxy.requests
            if path.endswith("/metadata")}


def test_flink_dicomweb_output_equals_local_runner(orthanc, flink_cluster, tmp_path):
    """A DICOMweb source on the standalone cluster: listing (paged, two studies a page)
    and fetching run in the SDK harness, and every output equals the local runner's.

    Then the server changes (an instance deleted from a series of three, a study added)
    and ``--incremental`` on the cluster requests only those two series' metadata, keeps
    the other five series' rows, and writes what a fresh local run on the changed server
    writes, byte for byte. The runs go through a proxy that lists the paths asked; the
    server is put back as it was afterwards."""
    proxy = FaultyProxy(orthanc.url)
    source = f"dicomweb+{proxy.url}/dicom-web"
    reference, out, fresh = tmp_path / "reference", tmp_path / "flink", tmp_path / "fresh"
    for folder in (reference, out, fresh):
        folder.mkdir()
    deleted = added = None
    try:
        assert run_cli(source, "-o", reference / "scan.csv", "--quiet",
                       "--dicomweb-page-size=2") == 0
        summary = json.loads((reference / "scan.summary.json").read_text())
        assert summary["rows"] == 9 and summary["errors"] == 0
        finished = _finished_jobs(flink_cluster)
        run_flink(flink_cluster, source, out)
        assert_same_output(reference, out)
        assert _finished_jobs(flink_cluster) == finished + 1

        changed = next(series for series in orthanc.get_json("/dicom-web/series")
                       if series["00201209"]["Value"] == [3])  # Number of Series Related Instances
        study, series = changed["0020000D"]["Value"][0], changed["0020000E"]["Value"][0]
        sop = orthanc.get_json(f"/dicom-web/studies/{study}/series/{series}/instances"
                               )[-1]["00080018"]["Value"][0]
        deleted = orthanc.instance_file(sop)
        orthanc.delete_instance(sop)
        added = pydicom.dcmread(pydicom_file("rtdose.dcm"), stop_before_pixels=True)
        assert orthanc.upload(open(pydicom_file("rtdose.dcm"), "rb").read()) == "Success"

        del proxy.requests[:]
        run_flink(flink_cluster, source, out, "--incremental")
        assert metadata_requested(proxy) == {series, added.SeriesInstanceUID}
        summary = json.loads((out / "scan.summary.json").read_text())
        assert summary["incremental"] and summary["rows"] == 9
        assert (summary["dicomweb_series_read"], summary["dicomweb_series_reused"],
                summary["dicomweb_instances_reused"], summary["files_dropped"]) == (2, 5, 6, 1)
        assert _finished_jobs(flink_cluster) == finished + 2

        del proxy.requests[:]
        assert run_cli(source, "-o", fresh / "scan.csv", "--quiet",
                       "--dicomweb-page-size=2") == 0
        assert len(metadata_requested(proxy)) == 7  # every series read
        assert_same_output(fresh, out)
        table = (out / "scan.csv").read_text()
        assert f"/instances/{sop}" not in table and f"/instances/{added.SOPInstanceUID}" in table
    finally:
        proxy.stop()
        if added is not None:
            orthanc.delete_study(added.StudyInstanceUID)
        if deleted is not None:
            assert orthanc.upload(deleted) == "Success"

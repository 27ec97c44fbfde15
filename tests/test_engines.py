"""The real pipeline on real engines: a standalone Flink cluster and Prism.

Each engine runs the command line exactly as docs/engines.md tells users to
(``--config run_configs/<engine>.yaml`` plus the machine-specific flags), in a
child process this test starts and waits for by PID. Its CSV, errors and skipped
files must equal the local FnApiRunner's byte for byte.

The engines come from ``bash .ci/install_engines.sh`` (run by ``.ci/install``); when
they are missing these tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import copy_pydicom_file, pydicom_file, run_cli
from tests.engines import FlinkCluster, prism_binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARED = ("scan.csv", "scan.errors.csv", "scan.skipped.csv")
RUN_TIMEOUT = 300


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
    """The local runner's output folder (FnApiRunner, the default)."""
    out = tmp_path_factory.mktemp("reference")
    assert run_cli(archive, "-o", out / "scan.csv", "--quiet") == 0
    summary = json.loads((out / "scan.summary.json").read_text())
    assert (summary["rows"], summary["errors"], summary["non_dicom_skipped"]) == (5, 2, 1)
    return out


def run_cli_process(args: list, log_path) -> None:
    """``python -m beam_pipeline ARGS`` in its own process group, started and waited
    for by PID; whatever it leaves behind in that group (a job server JVM, a Prism
    process) fails the test and is killed by group id."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beam_pipeline", *map(str, args)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        returncode = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        leftovers = _group_alive(proc.pid)
        if proc.poll() is None or leftovers:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    log_text = open(log_path, encoding="utf-8", errors="replace").read()
    assert returncode == 0, f"exit status {returncode}\n{log_text[-6000:]}"
    assert not leftovers, f"the run left processes behind in its group\n{log_text[-3000:]}"


def _group_alive(pgid: int, grace: float = 5.0) -> bool:
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)


def assert_same_output(reference, out) -> None:
    for name in COMPARED:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    counts = ("files_matched", "rows", "errors", "non_dicom_skipped", "columns", "accounted_for")
    expected = json.loads((reference / "scan.summary.json").read_text())
    actual = json.loads((out / "scan.summary.json").read_text())
    assert {k: actual[k] for k in counts} == {k: expected[k] for k in counts}
    # The temporary shard folder is gone.
    assert not [name for name in os.listdir(out) if ".tmp-" in name]


@pytest.fixture(scope="module")
def flink_cluster():
    """JobManager and TaskManager as two JVMs on 127.0.0.1, stopped by PID on exit.
    No job server of our own: the run starts Beam's from --flink_job_server_jar."""
    with FlinkCluster(slots=2, job_server=False) as cluster:
        yield cluster


def test_flink_cluster_output_equals_local_runner(archive, reference, flink_cluster, tmp_path):
    finished = _finished_jobs(flink_cluster)
    run_cli_process(
        [archive, "-o", tmp_path / "scan.csv", "--quiet",
         "--config", "run_configs/flink.yaml",
         f"--flink_master={flink_cluster.flink_master}",  # overrides the config's port
         f"--flink_job_server_jar={flink_cluster.job_server_jar}",
         # Several shards spread over two subtasks, so the final merge interleaves.
         "--parallelism=2", "--rows_per_shard=2"],
        tmp_path / "run.log",
    )
    assert_same_output(reference, tmp_path)
    # The job really ran on the standalone cluster, not on an embedded one.
    assert _finished_jobs(flink_cluster) == finished + 1


def _finished_jobs(cluster) -> int:
    return sum(job["state"] == "FINISHED" for job in cluster.rest("/jobs/overview")["jobs"])


def test_prism_output_equals_local_runner(archive, reference, tmp_path):
    run_cli_process(
        [archive, "-o", tmp_path / "scan.csv", "--quiet",
         "--config", "run_configs/prism.yaml", f"--prism_location={prism_binary()}",
         "--rows_per_shard=2"],
        tmp_path / "run.log",
    )
    assert_same_output(reference, tmp_path)
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert "prism" in log.lower() and "ownload" not in log

"""One writer per output (beam_pipeline/lock.py): locally, on fake-gcs-server and on
moto, plus what each storage server honours of the conditional requests the lock needs.

Found (and pinned here, so a server upgrade that changes it shows up):
* moto 5.2.1 honours ``IfNoneMatch="*"`` and ``IfMatch`` on put, ``IfMatch`` on delete.
* gcp-storage-emulator ignores ``ifGenerationMatch`` on uploads and deletes: a second
  create-if-absent overwrites. The GCS lock tests therefore run on fake-gcs-server,
  which honours it on uploads (not on delete: the lock reads before it deletes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import storage_servers as ss
from conftest import run_cli, write_dicom
from beam_pipeline import lock as lock_module
from beam_pipeline.lock import GcsStore, OutputLock, OutputLocked, S3Store, store_for

BUCKET = "lock-test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    with ss.loopback_only():
        yield


@pytest.fixture(scope="module")
def fake_gcs():
    server = ss.start_fake_gcs_server(bucket=BUCKET)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.endpoint
    try:
        yield server
    finally:
        ss.restore_env({"STORAGE_EMULATOR_HOST": previous})
        server.stop()


@pytest.fixture(scope="module")
def moto():
    server = ss.start_moto_server(bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "gs", "s3"])
def lock_path(request, tmp_path):
    """(lock path, pipeline options) on each store."""
    if request.param == "local":
        yield str(tmp_path / "scan.lock"), PipelineOptions([])
        return
    name = f"run-{time.monotonic_ns()}/scan.lock"
    if request.param == "gs":
        request.getfixturevalue("fake_gcs")
        yield f"gs://{BUCKET}/{name}", PipelineOptions([])
    else:
        server = request.getfixturevalue("moto")
        yield f"s3://{BUCKET}/{name}", PipelineOptions(ss.s3_pipeline_args(server.endpoint))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def holder(**changes) -> bytes:
    content = {"format": lock_module.LOCK_FORMAT, "version": 1, "run_id": "other-run",
               "host": socket.gethostname(), "pid": os.getpid(), "pid_start": None,
               "started": "2026-01-01T00:00:00+0000", "heartbeat": time.time()}
    content.update(changes)
    return json.dumps(content).encode()


# --------------------------------------------------------------------------------------
# What the stores honour


def test_create_if_absent_and_replace_only_if_unchanged(lock_path):
    path, options = lock_path
    store = store_for(path, options)
    first = store.create(b"one")
    assert first is not None
    assert store.create(b"two") is None  # exists: refused, not overwritten
    assert store.read()[0] == b"one"
    wrong = (0, b"x") if isinstance(store, lock_module.LocalStore) else (
        '"0"' if isinstance(store, S3Store) else (1, b"x"))
    assert store.replace(b"three", wrong) is None
    assert store.read()[0] == b"one"
    second = store.replace(b"four", first)
    assert second is not None and store.read()[0] == b"four"
    store.delete(second)
    assert store.read() is None


def test_gcp_storage_emulator_ignores_generation_preconditions():
    """Why the GCS lock tests use fake-gcs-server: this emulator overwrites."""
    server = ss.start_gcs_emulator(bucket=BUCKET)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.endpoint
    try:
        store = GcsStore(f"gs://{BUCKET}/x.lock", PipelineOptions([]))
        assert store.create(b"one") is not None
        assert store.create(b"two") is not None, "gcp-storage-emulator now honours " \
            "ifGenerationMatch=0: the GCS lock tests can use it"
        assert store.read()[0] == b"two"
    finally:
        ss.restore_env({"STORAGE_EMULATOR_HOST": previous})
        server.stop()


# --------------------------------------------------------------------------------------
# The lock


def test_second_holder_is_refused_in_one_line_naming_the_first(lock_path):
    path, options = lock_path
    with OutputLock(path, "first", options=options):
        with pytest.raises(OutputLocked) as refused:
            OutputLock(path, "second", options=options).acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert f"host {socket.gethostname()}" in message and f"pid {os.getpid()}" in message
    assert "run first" in message and "started 20" in message
    assert store_for(path, options).read() is None  # released


def test_concurrent_acquires_admit_exactly_one(lock_path):
    path, options = lock_path
    outcomes, barrier = [], threading.Barrier(4)

    def contend(number):
        candidate = OutputLock(path, f"run-{number}", options=options)
        barrier.wait()
        try:
            candidate.acquire()
            outcomes.append(candidate)
        except OutputLocked:
            outcomes.append(None)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [candidate for candidate in outcomes if candidate is not None]
    assert len(winners) == 1 and len(outcomes) == 4
    winners[0].release()


@pytest.mark.parametrize("stale", ["dead pid", "old heartbeat", "unreadable and old"])
def test_stale_lock_is_taken_over(lock_path, stale, monkeypatch):
    path, options = lock_path
    store = store_for(path, options)
    if stale == "dead pid":
        store.create(holder(pid=dead_pid()))
    elif stale == "old heartbeat":
        store.create(holder(host="elsewhere", heartbeat=time.time() - 3600))
    else:
        store.create(b"not json")
        monkeypatch.setattr(lock_module.time, "time", lambda real=time.time: real() + 3600)
    taker = OutputLock(path, "taker", options=options)
    taker.acquire()
    try:
        assert taker.took_over is not None
        assert json.loads(store.read()[0])["run_id"] == "taker"
    finally:
        taker.release()


def test_live_lock_of_another_host_is_not_stale(lock_path):
    path, options = lock_path
    store_for(path, options).create(holder(host="elsewhere", pid=1))
    with pytest.raises(OutputLocked, match="host elsewhere, pid 1"):
        OutputLock(path, "second", options=options).acquire()


def test_waiting_run_gets_the_lock_when_it_is_released(lock_path, monkeypatch):
    path, options = lock_path
    monkeypatch.setattr(lock_module, "POLL_SECONDS", 0.1)
    first = OutputLock(path, "first", options=options)
    first.acquire()
    threading.Timer(0.5, first.release).start()
    with OutputLock(path, "second", wait_seconds=30, options=options) as second:
        assert json.loads(store_for(path, options).read()[0])["run_id"] == "second"
        assert second.took_over is None


def test_heartbeat_renews_the_lock(lock_path):
    path, options = lock_path
    with OutputLock(path, "beating", options=options, heartbeat_seconds=0.2):
        before = json.loads(store_for(path, options).read()[0])["heartbeat"]
        time.sleep(1.0)
        after = json.loads(store_for(path, options).read()[0])["heartbeat"]
    assert after > before


# --------------------------------------------------------------------------------------
# The CLI


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock-archive")
    for number in range(3):
        write_dicom(root / f"ct{number}.dcm", PatientID=f"P{number}")
    return root


def test_cli_stops_with_exit_2_before_any_work(small_archive, tmp_path, capsys):
    output = tmp_path / "scan.csv"
    with OutputLock(str(tmp_path / "scan.lock"), "holder"):
        assert run_cli(small_archive, "-o", output, "--quiet") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "locked by another run" in lines[0], lines
    assert f"pid {os.getpid()}" in lines[0] and "run holder" in lines[0]
    assert sorted(os.listdir(tmp_path)) == []  # no state, no temp dir, no output
    assert run_cli(small_archive, "-o", output, "--quiet") == 0  # released: runs


def test_cli_takes_over_the_lock_of_a_killed_run(small_archive, tmp_path):
    """A run killed with SIGKILL leaves its lock; the next run sees its pid is gone."""
    lock_file = tmp_path / "scan.lock"
    code = ("import sys, time; from beam_pipeline.lock import OutputLock; "
            f"OutputLock({str(lock_file)!r}, 'killed').acquire(); print('held', flush=True); "
            "time.sleep(600)")
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline().strip() == b"held"
    finally:
        process.kill()
        process.wait()
    assert lock_file.exists()
    assert run_cli(small_archive, "-o", tmp_path / "scan.csv", "--quiet") == 0
    assert not lock_file.exists()
    assert len((tmp_path / "scan.csv").read_text().splitlines()) == 4


def test_two_cli_runs_at_once_one_waits(small_archive, tmp_path):
    """Started together on one output: without waiting one of them exits 2; with
    --wait-for-lock both finish, one after the other, and the state stays whole."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "beam_pipeline", str(small_archive), "-o",
               str(tmp_path / "scan.csv"), "--quiet", "--incremental"]

    def both(*flags):
        processes = [subprocess.Popen(command + list(flags), env=env, cwd=ROOT,
                                      stderr=subprocess.PIPE, text=True) for _ in range(2)]
        return [(process.wait(timeout=300), process.stderr.read()) for process in processes]

    results = both("--wait-for-lock=300")
    assert [code for code, _ in results] == [0, 0], results
    current = json.load(open(tmp_path / "scan.state" / "CURRENT"))["generation"]
    assert os.listdir(tmp_path / "scan.state") == ["CURRENT", current] or sorted(
        os.listdir(tmp_path / "scan.state")) == sorted(["CURRENT", current])
    summary = json.load(open(tmp_path / "scan.summary.json"))
    assert summary["files_reused"] == 3  # the second run reused the first one's rows

    # Without waiting: a run that finds the lock held stops at once with exit 2.
    holder_lock = OutputLock(str(tmp_path / "scan.lock"), "holder")
    with holder_lock:
        results = both()
    assert [code for code, _ in results] == [2, 2]
    assert all("locked by another run" in err and "run holder" in err for _, err in results)


# On S3 only: fake-gcs-server cannot host the pipeline (Beam's batched deletes get "not
# multi-part"), and gcp-storage-emulator would let the second run overwrite the lock.
@pytest.mark.parametrize("scheme", ["s3"])
def test_cli_on_a_locked_bucket_output_exits_2(scheme, small_archive, capsys, request):
    if scheme == "gs":
        request.getfixturevalue("fake_gcs")
        args = []
    else:
        args = ss.s3_pipeline_args(request.getfixturevalue("moto").endpoint)
    output = f"{scheme}://{BUCKET}/cli-{time.monotonic_ns()}/scan.csv"
    options = PipelineOptions(args)
    with OutputLock(output[: -len(".csv")] + ".lock", "bucket-holder", options=options):
        assert run_cli(small_archive, "-o", output, "--quiet", *args) == 2
    line = capsys.readouterr().err.strip()
    assert "locked by another run" in line and "run bucket-holder" in line
    FileSystems.set_options(options)
    assert not FileSystems.match([output.rsplit("/", 1)[0] + "/**"])[0].metadata_list
    FileSystems.set_options(None)

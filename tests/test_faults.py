"""Runs that cannot finish: an output nobody can write, a disk that fills up, Ctrl-C and
SIGTERM. Each with the real thing: a real subprocess and a real signal, a read-only and
a size-limited tmpfs mounted here (as root, as CI runs; unmounted in teardown)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from beam_pipeline.lock import LockNotWritable, OutputLock
from beam_pipeline.stopping import (
    Stopped, quiet_endings, quiet_runner_after_stop, stop_on_signals, stopped_in,
)
from tests.conftest import copy_pydicom_file

IN_CI = os.environ.get("CI") == "true"
STOP_LIMIT_SECONDS = 10.0


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "beam_pipeline", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(result, status: int, fragment: str) -> str:
    assert result.returncode == status, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("dicom-meta-extract:")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its SHA-256 (the lock and temp files included)."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, folder)] = hashlib.sha256(stream.read()).hexdigest()
    return found


def leftovers(folder) -> list:
    return sorted(name for name in snapshot(folder)
                  if name.endswith((".lock", ".partial")) or ".tmp-" in name
                  or ".dicom-meta-extract-probe-" in name)


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount(folder, options): a tmpfs there, unmounted at teardown. Needs root: fails
    under CI (which runs as root), skips elsewhere."""
    mounted = []

    def mount(folder, options):
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            message = f"cannot mount a tmpfs: {result.stderr.strip()}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        copy_pydicom_file(name, folder)
    return folder


def test_unwritable_outputs_are_one_line_before_any_work(small_archive, tmp_path, mount_tmpfs):
    one_error_line(cli(small_archive, "-o", "/proc/x.csv"), 2, "'/proc' is not writable")
    read_only = mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    line = one_error_line(cli(small_archive, "-o", read_only / "scan.csv"), 2, "Read-only file system")
    assert str(read_only) in line and os.listdir(read_only) == []
    # Behind the launcher's check: the lock itself says it in one line.
    with pytest.raises(LockNotWritable, match="cannot create the lock /proc/x.lock"):
        with OutputLock("/proc/x.lock", "run-1", 0):
            pass


def test_full_disk_exit_1_previous_outputs_untouched_then_a_run_with_room(
        small_archive, tmp_path, mount_tmpfs):
    import benchmarks.make_archive as make_archive

    inputs = tmp_path / "in"
    make_archive.main([str(inputs), "-n", "200", "--small-images"])
    disk = mount_tmpfs(tmp_path / "disk", "size=1m")
    first = cli(small_archive, "-o", disk / "scan.csv", "--quiet")
    assert first.returncode == 0, first.stderr
    before = snapshot(disk)
    assert before and not leftovers(disk)

    result = cli(inputs, "-o", disk / "scan.csv", "--quiet", "--incremental")
    line = one_error_line(result, 1, "disk full (no space left on device)")
    assert str(disk) in line
    assert snapshot(disk) == before  # outputs, state, CURRENT: byte for byte; no temp file
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    done = cli(inputs, "-o", disk / "scan.csv", "--quiet", "--incremental")
    assert done.returncode == 0, done.stderr
    assert not leftovers(disk)


def _interrupt(inputs, out_dir, signum, *flags) -> tuple[subprocess.CompletedProcess, float, list]:
    """Start a run, signal it once its state generation exists (work has begun); returns
    (the result, seconds from the signal to its exit, its child processes)."""
    state = out_dir / "scan.state"
    known = set(os.listdir(state)) if state.exists() else set()
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline", str(inputs), "-o", str(out_dir / "scan.csv"),
         "--quiet", "--incremental", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if state.exists() and set(os.listdir(state)) - known - {"CURRENT"}:
            break
        time.sleep(0.05)
    workers = bool(flags)
    while workers and time.time() < deadline and process.poll() is None and not any(
        "sdk_worker" in " ".join(child.cmdline())
        for child in psutil.Process(process.pid).children(recursive=True)
    ):
        time.sleep(0.05)
    time.sleep(1.5)
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signum)
    sent = time.time()
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return (subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr),
            time.time() - sent, children)


def test_ctrl_c_and_sigterm_stop_within_10_s_and_the_next_run_resumes(tmp_path):
    import benchmarks.make_archive as make_archive

    inputs = tmp_path / "in"
    make_archive.main([str(inputs), "-n", "1500", "--small-images"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    first = sorted(inputs.iterdir())[0]  # one patient's files: committed, then reused
    committed = sum(1 for path in first.rglob("*") if path.is_file())
    assert cli(first, "-o", out_dir / "scan.csv", "--quiet").returncode == 0
    before = snapshot(out_dir)
    # SIGTERM with SDK worker processes (a scheduler), SIGINT in-process (Ctrl-C).
    for signum, flags in (
        (signal.SIGTERM, ("--direct_running_mode=multi_processing", "--direct_num_workers=2")),
        (signal.SIGINT, ()),
    ):
        result, seconds, children = _interrupt(inputs, out_dir, signum, *flags)
        assert result.returncode == 128 + signum, (
            "the run ended before the signal: make the input larger" if result.returncode == 0
            else result.stderr)
        assert seconds < STOP_LIMIT_SECONDS, seconds
        one_error_line(result, 128 + signum, f"stopped by {signal.Signals(signum).name}")
        assert not [child for child in children if child.is_running()
                    and child.status() != psutil.STATUS_ZOMBIE]
        if flags:
            assert children  # the check above had workers to look at
        after = snapshot(out_dir)
        # The committed outputs and CURRENT are byte for byte as they were; the lock is
        # gone; only the interrupted generation's finished shards remain, for a resume.
        assert {k: v for k, v in after.items() if "/gen-" not in k or k in before} == before
        assert not leftovers(out_dir)
    done = cli(inputs, "-o", out_dir / "scan.csv", "--incremental")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out_dir / "scan.summary.json").read_text())
    assert summary["rows"] == 1500
    assert summary["files_reused"] + summary["files_resumed"] >= committed > 0


def _stop_inside_a_bundle():
    """Run a pipeline in this thread whose DoFn is where the signal lands (as in the
    launcher's thread, Ctrl-C with the in-process runner); returns what reached us."""
    import apache_beam as beam

    def stop(_element):
        raise Stopped(signal.SIGINT)

    try:
        with beam.Pipeline() as pipeline:
            _ = pipeline | beam.Create([1]) | "Stop" >> beam.Map(stop)
    except BaseException as reached:  # pylint: disable=broad-except
        return reached
    raise AssertionError("the pipeline ran to its end")


def test_a_stop_inside_a_bundle_is_found_and_beam_logs_no_traceback(caplog):
    """Beam logs a bundle's error with its traceback before it re-raises it; for a stop
    the launcher says one line instead, so the record is dropped (any other is kept)."""
    runner_errors = lambda: [r for r in caplog.records  # noqa: E731
                             if r.name == "apache_beam.runners.common" and r.levelname == "ERROR"]
    reached = _stop_inside_a_bundle()
    assert stopped_in(reached) is not None and stopped_in(reached).signum == signal.SIGINT
    assert runner_errors(), "Beam no longer logs a bundle's error: the filter has nothing to do"
    caplog.clear()
    with quiet_endings():
        reached = _stop_inside_a_bundle()
    assert stopped_in(reached) is not None
    assert not runner_errors()


def test_after_a_stop_the_runners_lost_streams_are_not_reported():
    """Once a stop has ended the workers, the runner's planes lose their streams and log
    it with a traceback, at a moment the scheduler picks: such records are dropped until
    the next run starts; our own lines and other loggers' are kept."""
    import io

    shown = io.StringIO()
    handler = logging.StreamHandler(shown)  # as a basicConfig'd root logger has
    logging.getLogger().addHandler(handler)
    data_plane = logging.getLogger("apache_beam.runners.worker.data_plane")
    ours = logging.getLogger("beam_pipeline.test")

    def log_both():
        shown.seek(0)
        shown.truncate()
        try:
            raise ConnectionError("stream lost")
        except ConnectionError:
            data_plane.exception("Failed to read inputs in the data plane.")
        ours.error("still shown")
        return shown.getvalue()

    try:
        with stop_on_signals():
            before = log_both()
            assert "Failed to read inputs" in before and "Traceback" in before
            quiet_runner_after_stop()
            after = log_both()
        assert "still shown" in after and "Failed to read inputs" not in after
        assert "Traceback" not in after
        assert "Failed to read inputs" not in log_both()  # the run ended: still quiet
        with stop_on_signals():  # the next run starts: its runner's records show again
            assert "Failed to read inputs" in log_both()
    finally:
        logging.getLogger().removeHandler(handler)

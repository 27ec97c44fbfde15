"""The command line in a child process, as the engine tests run it
(``tests/test_engines.py``): ``python -m beam_pipeline`` in its own process group,
started and waited for by PID, with this checkout first on ``PYTHONPATH``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT = 300


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
        leftovers = group_alive(proc.pid)
        if proc.poll() is None or leftovers:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    log_text = open(log_path, encoding="utf-8", errors="replace").read()
    assert returncode == 0, f"exit status {returncode}\n{log_text[-6000:]}"
    assert not leftovers, f"the run left processes behind in its group\n{log_text[-3000:]}"


def group_alive(pgid: int, grace: float = 5.0) -> bool:
    """Whether a process of group ``pgid`` is still there after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)

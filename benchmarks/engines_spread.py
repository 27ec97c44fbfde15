"""Flink and Prism: does the Python work spread over SDK worker processes? Against the
local default, same archive, same bytes.

``python -m benchmarks.engines_spread ARCHIVE [--runs local,prism,flink,flinkp]``

Starts the engines tests' Flink cluster (``tests/engines.py``: a JobManager and one
TaskManager with 2 slots on 127.0.0.1) and runs the CLI, one run after the other:

* ``local``: the local default (the FnApiRunner, one SDK worker process per core);
* ``prism``: ``--config run_configs/prism.yaml`` as shipped;
* ``flink``: ``--config run_configs/flink.yaml`` as shipped (parallelism 2, LOOPBACK:
  one SDK harness, in the launching process, for every slot);
* ``flinkp``: the same with one SDK worker process per slot
  (``--experiments=use_loopback_process_worker --sdk_worker_parallelism=2``).

For each: wall seconds, CPU seconds of the CLI's process tree (its SDK workers; the
JVMs are not in it), the machine's busy cores (all processes, from ``/proc/stat``: the
machine is shared, so the load is printed too), the number of SDK worker processes
seen, and whether the CSV equals the local run's byte for byte. The engines come from
``.ci/install_engines.sh``.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
import time

import psutil

from benchmarks.run_benchmark import measure

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def workers_seen() -> set:
    """Pids of SDK worker processes among this process's descendants now (started by
    Beam's process LOOPBACK pool or by the FnApiRunner); other users' are not counted."""
    seen = set()
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
            shell = process.name() in ("sh", "bash")  # the FnApiRunner's `sh -c` wrapper
        except psutil.Error:
            continue
        if not shell and ("SdkHarness(" in command or "sdk_worker_main" in command):
            seen.add(process.pid)
    return seen


def run(name: str, command: list[str]) -> dict:
    busy_before, started = psutil.cpu_times(), time.perf_counter()
    pids: set = set()
    import threading

    stop = threading.Event()

    def watch():
        while not stop.is_set():
            pids.update(workers_seen())
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = measure(command)
    finally:
        stop.set()
        watcher.join()
    wall = time.perf_counter() - started
    after = psutil.cpu_times()
    idle = (after.idle + after.iowait) - (busy_before.idle + busy_before.iowait)
    total = sum(after) - sum(busy_before)
    result["machine_busy"] = (os.cpu_count() or 1) * (1 - idle / total) if total else 0.0
    result["workers"] = len(pids)
    result["wall"] = wall
    print(f"{name}: {result['seconds']:.1f} s, tree CPU {result['cpu']:.1f} s, machine "
          f"{result['machine_busy']:.2f} cores busy, {len(pids)} SDK worker processes, "
          f"load {result['load'][0]:.1f}-{result['load'][1]:.1f}", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--runs", default="local,prism,flink,flinkp")
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    from tests.engines import FlinkCluster, prism_binary  # the engines tests' helpers

    archive = os.path.abspath(args.archive)
    runs = args.runs.split(",")
    work = tempfile.mkdtemp(prefix="engines-spread-")
    cli = [sys.executable, "-m", "beam_pipeline", archive, "--quiet"]
    results, outputs = {}, {}
    cluster = FlinkCluster(slots=2) if any(r.startswith("flink") for r in runs) else None
    if cluster is not None:
        started = time.perf_counter()
        cluster.__enter__()
        print(f"Flink cluster (2 slots) up in {time.perf_counter() - started:.1f} s")
    try:
        for name in runs:
            outputs[name] = os.path.join(work, name, "scan.csv")
            os.makedirs(os.path.dirname(outputs[name]))
            flags = {
                "local": [],
                "prism": ["--config", "run_configs/prism.yaml",
                          f"--prism_location={prism_binary()}"],
                "flink": ["--config", "run_configs/flink.yaml"],
                "flinkp": ["--config", "run_configs/flink.yaml",
                           "--experiments=use_loopback_process_worker",
                           "--sdk_worker_parallelism=2"],
            }[name]
            if name.startswith("flink"):
                flags += [f"--flink_master={cluster.flink_master}",
                          f"--flink_job_server_jar={cluster.job_server_jar}"]
            results[name] = run(name, cli + ["-o", outputs[name], *flags])
    finally:
        if cluster is not None:
            cluster.__exit__(None, None, None)
    reference = outputs.get("local")
    print("\n| run | seconds | x local | tree CPU s | machine cores busy | SDK worker "
          "processes | CSV equals local |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        ratio = (f"{r['seconds'] / results['local']['seconds']:.2f}"
                 if "local" in results else "-")
        same = (filecmp.cmp(reference, outputs[name], shallow=False)
                if reference else "-")
        print(f"| {name} | {r['seconds']:.1f} | {ratio} | {r['cpu']:.1f} | "
              f"{r['machine_busy']:.2f} | {r['workers']} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a local run spends its time: each stage's wall and CPU, and how busy the cores were.

``python -m benchmarks.stage_profile ARCHIVE [--workers N] [--no-anchor] [-- CLI FLAGS]``

One command, measured in this order: (d) the anchor ``dcmdump -M`` on all cores (as in
``run_benchmark``), the import time of the CLI and of an SDK worker, the start-up of the
local runner with its workers (a one-element pipeline on the same runner), then the CLI's
pipeline on ARCHIVE, run in this process so that the runner's own records can be read,
and (d) again.

* **Stages, by wall time**: the FnApiRunner runs fused stages one after another and
  logs each bundle it starts (``transforms/common/beam_internals.fused_stage_of``); the
  time from one bundle's start to the next is its stage's, and so is the CPU the process
  tree used meanwhile (this process, its workers, and reaped children). A stage whose
  cores-busy figure is near 1 is serial. Fused stages are named by the pipeline steps
  they hold (``extraction+spill``: the steps fused into one stage). The runner's own
  process is shown apart: what it spends there is data passing through it (groupings,
  side inputs), not work of the pipeline's steps. So is the tree's kernel CPU (page
  faults, writes, memory mapped and unmapped), which varies more from run to run than
  the rest: a stage that writes a large file shows it.
* **Steps, by execution time**: the milliseconds the runner's state sampler charged to
  each step (``start``/``process``/``finish`` bundle, summed over workers), grouped as
  listing, dedupe, extraction, spill, columns, merge, series, report, commit: this splits a
  fused stage.
* **Cores busy over the run**: the tree's CPU sampled every 100 ms; the seconds with
  fewer than ``0.65 x cores`` busy (1.3 of 2) are the serial part the issue bounds.

The machine is shared: compare the ratios to (d) within one run; the load is printed.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from benchmarks.run_benchmark import DCMDUMP_HOW, count_files, measure

STEP_STAGES = (  # a step's label under the pipeline's composite -> stage (first match)
    ("listing", ("Discover/Patterns", "Discover/Storage", "Discover/Match", "Discover/Walk",
                 "Discover/Folders", "Discover/SpreadFolders", "ListDicomWeb")),
    ("dedupe", ("Discover/", "PlanReuse")),
    ("extraction", ("Extract", "DicomWeb")),
    ("spill", ("StoreRows",)),
    ("columns", ("WriteTables/Columns",)),
    ("merge", ("WriteTables",)),
    ("series", ("WriteSeriesTables",)),
    ("report", ("Report",)),
    ("commit", ("Commit",)),
)
TOP = "ExtractDicomMetadata/"  # the one composite every step is under (pipeline.py)
ORDER = [name for name, _ in STEP_STAGES] + ["other"]
_TRANSFORM = re.compile(r"ref_AppliedPTransform_([A-Za-z0-9_\-]+?)_\d+\b")
# A grouping's or side input's read or write is named by its label in parentheses.
_GROUPING = re.compile(r"\((" + TOP + r"[^()]+)\)")


def stage_of_step(label: str) -> str:
    """The stage a pipeline step belongs to, from its label (``/`` or ``-`` separated)."""
    label = label.replace("-", "/")
    label = label[len(TOP):] if label.startswith(TOP) else label
    for name, prefixes in STEP_STAGES:
        for prefix in prefixes:
            if prefix.endswith("/") and label.startswith(prefix):
                return name
            if label == prefix or label.startswith(prefix + "/"):
                return name
    return "other"


def stage_of_fused(fused: str) -> str:
    """A fused stage's name as the stages of the steps it holds, in pipeline order."""
    steps = _TRANSFORM.findall(fused) + _GROUPING.findall(fused)
    found = {stage_of_step(step) for step in steps} or {"other"}
    return "+".join(name for name in ORDER if name in found)


class TreeCpu:
    """CPU seconds (user + sys) of this process and all its descendants: the live ones as
    sampled, the reaped ones from ``RUSAGE_CHILDREN`` (a grandchild's share reaches it
    when its parent is reaped: a brief dip, never a double count)."""

    def __init__(self):
        self.me = psutil.Process()

    def __call__(self) -> float:
        return self.times()[0]

    def times(self) -> tuple[float, float, float]:
        """(user + sys, sys, this process's user + sys): all of the tree's CPU, the part
        spent in the kernel (page faults, writes, mapping and unmapping memory), and the
        runner's own process alone, not its workers'."""
        user = system = 0.0
        try:
            children = self.me.children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            try:
                times = child.cpu_times()
                user, system = user + times.user, system + times.system
            except psutil.Error:
                pass
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = self.me.cpu_times()
        user += reaped.ru_utime + own.user
        system += reaped.ru_stime + own.system
        return user + system, system, own.user + own.system


class Sampler(threading.Thread):
    def __init__(self, cpu: TreeCpu, interval: float = 0.1):
        super().__init__(daemon=True)
        self.cpu, self.interval, self.samples = cpu, interval, []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.samples.append((time.perf_counter(), self.cpu()))
            self.stopped.wait(self.interval)

    def low_busy_intervals(self, threshold: float) -> list:
        """(start, end) of each sampling interval with fewer than ``threshold`` cores busy."""
        return [(t0, t1) for (t0, c0), (t1, c1) in zip(self.samples, self.samples[1:])
                if t1 > t0 and (c1 - c0) / (t1 - t0) < threshold]


class BundleTimeline(logging.Handler):
    """(time, tree CPU, the tree's kernel CPU, this process's CPU, fused stage) at the
    start of every bundle the runner runs."""

    def __init__(self, cpu: TreeCpu):
        super().__init__(logging.DEBUG)
        self.cpu, self.events = cpu, []

    def emit(self, record):
        from transforms.common.beam_internals import fused_stage_of

        stage = fused_stage_of(record)
        if stage is not None:
            self.events.append((time.perf_counter(), *self.cpu.times(), stage_of_fused(stage)))


def step_msecs(result) -> dict:
    """Execution milliseconds per pipeline step (every bundle phase, all workers)."""
    from apache_beam.metrics import monitoring_infos as mi

    urns = {mi.START_BUNDLE_MSECS_URN, mi.PROCESS_BUNDLE_MSECS_URN, mi.FINISH_BUNDLE_MSECS_URN}
    totals: dict = collections.Counter()
    for info in result.monitoring_infos():
        if info.urn in urns:
            totals[info.labels.get(mi.PTRANSFORM_LABEL, "")] += mi.extract_counter_value(info)
    return totals


def import_seconds(module: str) -> tuple[float, list]:
    """Seconds to import ``module`` in a fresh interpreter, and the costliest packages."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    packages: dict = collections.Counter()  # top-level package -> its modules' own time
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
            own = int(parts[0].split(":")[1])
            packages[parts[2].strip().split(".")[0]] += own / 1e6
    return seconds, packages.most_common(6)


def runner_startup(options, cpu: TreeCpu) -> tuple[float, float]:
    """Wall and CPU seconds of a one-element pipeline on the CLI's runner (its workers'
    start-up, and stop)."""
    import apache_beam as beam

    from beam_pipeline.local_runner import make_runner

    wall, before = time.perf_counter(), cpu()
    with beam.Pipeline(runner=make_runner(options), options=options) as pipeline:
        _ = pipeline | beam.Create([0]) | beam.Map(lambda x: x)
    return time.perf_counter() - wall, cpu() - before


def profile(archive: str, output: str, cli_flags: list[str]) -> dict:
    from beam_pipeline import arguments, launch

    inputs, options, *_ = arguments.parse([archive, "-o", output, "--quiet", *cli_flags])
    cpu = TreeCpu()
    figures = {"options": {key: value for key, value in options.get_all_options(
        drop_default=True).items() if key.startswith("direct")}}
    figures["startup"] = runner_startup(options, cpu)
    timeline = BundleTimeline(cpu)
    logger = logging.getLogger(__import__(
        "transforms.common.beam_internals", fromlist=["x"]).bundle_logger_name())
    logger.addHandler(timeline)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    sampler = Sampler(cpu)
    results = []
    started, at_start = time.perf_counter(), cpu.times()
    sampler.start()
    try:
        summary = launch.run(inputs, options, quiet=True, observe=results.append)
    finally:
        sampler.stopped.set()
        sampler.join()
        logger.removeHandler(timeline)
    ended, at_end = time.perf_counter(), cpu.times()
    events = ([(started, *at_start, "construction")] + timeline.events
              + [(ended, *at_end, "")])
    low = sampler.low_busy_intervals(0.65 * (os.cpu_count() or 1))
    starts = [event[0] for event in events]
    low_by_stage: dict = collections.Counter()  # an interval counts for the stage it began in
    for t0, t1 in low:
        low_by_stage[events[max(0, bisect.bisect_right(starts, t0) - 1)][-1]] += t1 - t0
    stages: dict = collections.OrderedDict()
    for (t0, c0, k0, o0, name), (t1, c1, k1, o1, _) in zip(events, events[1:]):
        wall, used, own, kernel, _ = stages.get(name, (0.0, 0.0, 0.0, 0.0, 0.0))
        stages[name] = (wall + t1 - t0, used + c1 - c0, own + o1 - o0, kernel + k1 - k0,
                        low_by_stage[name])
    figures.update(
        seconds=ended - started, cpu=at_end[0] - at_start[0], stages=stages, summary=summary,
        steps=step_msecs(results[0]) if results else {},
        low_busy=sum(t1 - t0 for t0, t1 in low),
    )
    return figures


def print_profile(figures: dict, files: int, anchor: float | None) -> None:
    cores = os.cpu_count() or 1
    seconds, cpu = figures["seconds"], figures["cpu"]
    ratio = f", {seconds / anchor:.2f}x dcmdump -M" if anchor else ""
    print(f"\npipeline: {seconds:.1f} s{ratio}, CPU {cpu:.1f} s ({1000 * cpu / files:.2f} ms "
          f"per file), {cpu / seconds:.2f} of {cores} cores busy on average; "
          f"{figures['low_busy']:.1f} s with fewer than {0.65 * cores:.1f} cores busy "
          f"(issue target at 2 cores: <= {3 + 1.5 * files / 1e5:.1f} s); options "
          f"{figures['options']}; rows {figures['summary'].get('rows')}")
    print(f"runner start-up with its workers (one-element pipeline): "
          f"{figures['startup'][0]:.2f} s, {figures['startup'][1]:.2f} CPU s")
    print("\n| fused stages (runner's order) | wall s | share | CPU s | cores busy "
          f"| s under {0.65 * cores:.1f} busy | runner process CPU s | kernel CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (wall, used, own, kernel, low) in figures["stages"].items():
        print(f"| {name} | {wall:.2f} | {100 * wall / seconds:.0f} % | {used:.2f} | "
              f"{used / wall if wall else 0:.2f} | {low:.2f} | {own:.2f} | {kernel:.2f} |")
    by_stage: dict = collections.Counter()
    for step, msecs in figures["steps"].items():
        by_stage[stage_of_step(step)] += msecs
    total = sum(by_stage.values()) or 1
    print("\n| step group (execution time, all workers) | CPU-ish s | share |")
    print("|---|---:|---:|")
    for name in ORDER:
        if by_stage.get(name):
            print(f"| {name} | {by_stage[name] / 1000:.2f} | {100 * by_stage[name] / total:.0f} % |")


def split_cli_flags(argv: list) -> tuple[list, list]:
    """(the profile's arguments, the CLI's flags): those after ``--`` are the CLI's
    (argparse would not give them to a positional that follows the archive)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--workers", type=int,
                        help="SDK worker processes (default: the CLI's local default)")
    parser.add_argument("--no-anchor", action="store_true", help="skip dcmdump -M")
    parser.add_argument("--keep", help="folder for the outputs (default: a temporary one)")
    argv, cli_flags = split_cli_flags(sys.argv[1:] if argv is None else argv)
    parser.epilog = "-- CLI FLAGS: passed to the CLI (for instance -- --no-series-tables)"
    args = parser.parse_args(argv)
    archive = os.path.abspath(args.archive)
    if not args.no_anchor and shutil.which("dcmdump") is None:
        raise SystemExit(DCMDUMP_HOW)
    files, cores = count_files(archive), os.cpu_count() or 1
    work = args.keep or tempfile.mkdtemp(prefix="dicom-profile-")
    os.makedirs(work, exist_ok=True)
    print(f"archive {archive}: {files} files; {cores} cores; load average "
          f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    dcmdump = (f"find {archive!r} -type f -print0 | xargs -0 -P{cores} -n 500 "
               f"dcmdump -M -q > /dev/null 2>&1")
    anchors = []
    if not args.no_anchor:
        anchors.append(measure(dcmdump, shell=True))
        print(f"(d) dcmdump -M, {cores} processes: {anchors[0]['seconds']:.1f} s, "
              f"CPU {anchors[0]['cpu']:.1f} s", flush=True)
    for module in ("beam_pipeline.launch", "apache_beam.runners.worker.sdk_worker_main"):
        seconds, heaviest = import_seconds(module)
        print(f"import {module}: {seconds:.2f} s in a fresh interpreter; heaviest: "
              + ", ".join(f"{name} {value:.2f} s" for name, value in heaviest), flush=True)
    flags = cli_flags
    if args.workers:
        flags += ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
    figures = profile(archive, os.path.join(work, "profile.csv"), flags)
    if not args.no_anchor:
        anchors.append(measure(dcmdump, shell=True))
        print(f"(d) dcmdump -M again: {anchors[1]['seconds']:.1f} s")
    anchor = statistics.mean(a["seconds"] for a in anchors) if anchors else None
    print_profile(figures, files, anchor)
    print(f"\nload average after: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Instances per second from a DICOMweb server: this tool against ``dicomweb-client``
fetching the same series' metadata one after another in one thread (the anchor).

    PYTHONPATH=. python -m benchmarks.dicomweb_throughput --instances 3000 --repeats 3

Generates an archive (``benchmarks/make_archive.py``, small images), starts Orthanc with
its DICOMweb plugin on a free 127.0.0.1 port (``tests/dicomweb_servers.py``; Debian's
``orthanc`` and ``orthanc-dicomweb``), uploads it, then runs, interleaved, ``repeats``
times each:

* anchor: ``DICOMwebClient.search_for_studies`` (every page), ``search_for_series`` per
  study, then ``retrieve_series_metadata`` per series, sequentially in one thread: the
  JSON of every instance, nothing more;
* tool: ``dicom-meta-extract dicomweb+http://...`` in a fresh process with the local
  default (one worker process per core for a DICOMweb input), which also turns every
  instance into a row and writes the table, errors, summary, report and state;
* then the tool again with ``--incremental`` over the same output, nothing changed on
  the server: every series reused (checked in its summary), no metadata requested.

Prints the medians (instances/s) and the ratio tool / anchor (>1: the tool is faster).
Absolute figures depend on the machine and its load; the ratio is measured in one
command, against the same server.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.make_archive import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from dicomweb_servers import Orthanc  # noqa: E402  pylint: disable=wrong-import-position


def anchor(root: str) -> int:
    """Every instance's metadata through dicomweb-client, one request at a time."""
    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(root)
    instances = 0
    for study in client.search_for_studies(get_remaining=True):
        study_uid = study["0020000D"]["Value"][0]
        for series in client.search_for_series(study_uid):
            series_uid = series["0020000E"]["Value"][0]
            instances += len(client.retrieve_series_metadata(study_uid, series_uid))
    return instances


def tool(source: str, out_dir: str, *extra: str) -> dict:
    """The command line in a fresh process; its summary."""
    output = os.path.join(out_dir, "scan.csv")
    subprocess.run([sys.executable, "-m", "beam_pipeline", source, "-o", output, "--quiet",
                    *extra], check=True, cwd=ROOT)
    with open(os.path.join(out_dir, "scan.summary.json"), encoding="utf-8") as stream:
        summary = json.load(stream)
    assert summary["accounted_for"] and summary["errors"] == 0, summary
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="dicomweb-bench-")
    archive = os.path.join(work, "archive")
    count = generate(archive, args.instances, small=True)
    server = Orthanc(os.path.join(work, "orthanc"))
    try:
        started = time.monotonic()
        paths = [p for p in glob.glob(archive + "/**/*", recursive=True) if os.path.isfile(p)]

        def upload(path):
            with open(path, "rb") as stream:
                return server.upload(stream.read())

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(upload, paths))
        assert statuses.count("Success") == count, set(statuses)
        series = len(server.get_json("/series"))
        print(f"{count} instances in {series} series uploaded to Orthanc in "
              f"{time.monotonic() - started:.1f} s")
        anchor_rates, tool_rates, pipeline_rates, incremental_rates = [], [], [], []
        for repeat in range(args.repeats):
            started = time.monotonic()
            assert anchor(server.root) == count
            anchor_rates.append(count / (time.monotonic() - started))
            out_dir = os.path.join(work, f"out-{repeat}")
            os.makedirs(out_dir)
            started = time.monotonic()
            summary = tool(server.input, out_dir)
            assert summary["rows"] == count
            tool_rates.append(count / (time.monotonic() - started))
            pipeline_rates.append(count / summary["seconds"])
            started = time.monotonic()
            summary = tool(server.input, out_dir, "--incremental")
            assert summary["rows"] == count and summary["dicomweb_series_read"] == 0
            assert summary["dicomweb_series_reused"] == series, summary
            incremental_rates.append(count / (time.monotonic() - started))
        anchor_rate, tool_rate = statistics.median(anchor_rates), statistics.median(tool_rates)
        pipeline_rate = statistics.median(pipeline_rates)
        print(f"{'run':<44} instances/s  (medians of {args.repeats})")
        print(f"{'dicomweb-client, sequential, one thread':<44} {anchor_rate:11.0f}")
        print(f"{'dicom-meta-extract, whole command':<44} {tool_rate:11.0f}")
        print(f"{'dicom-meta-extract, pipeline (summary)':<44} {pipeline_rate:11.0f}")
        print(f"{'dicom-meta-extract --incremental, unchanged':<44} "
              f"{statistics.median(incremental_rates):11.0f}")
        print(f"ratio tool / anchor: whole command {tool_rate / anchor_rate:.2f}, "
              f"pipeline {pipeline_rate / anchor_rate:.2f} (>1: the tool is faster)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

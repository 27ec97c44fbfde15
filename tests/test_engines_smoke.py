"""Smoke tests: a tiny real Beam pipeline on a real Flink cluster and on Prism.

Needs the engines from `bash .ci/install_engines.sh`; fails (does not skip)
when they are missing.
"""

from __future__ import annotations

import glob
import logging
import os
import time

import pytest

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

try:  # tests/ on sys.path (pytest's default "prepend" import mode)
    from engines import FlinkCluster, prism_pipeline_args
except ImportError:  # tests/ is a package
    from tests.engines import FlinkCluster, prism_pipeline_args

N = 30
EXPECTED = {f"{k}:{sum(n * n for n in range(N) if n % 3 == k)}" for k in range(3)}
_log = logging.getLogger(__name__)


def _run_pipeline(args: list[str], tmp_path) -> set[str]:
    """Files -> MatchFiles -> ReadMatches -> CombinePerKey -> WriteToText.

    Returns the lines written.  Input and output are local paths, visible to
    the runner's JVMs and to the (LOOPBACK) Python SDK harness alike.
    """
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    for n in range(N):
        (in_dir / f"{n:03d}.txt").write_text(str(n))
    options = PipelineOptions(args)
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | "Match" >> fileio.MatchFiles(str(in_dir / "*.txt"))
            | "Read" >> fileio.ReadMatches()
            | "Parse" >> beam.Map(lambda f: int(f.read_utf8()))
            | "KeySquare" >> beam.Map(lambda n: (n % 3, n * n))
            | "Sum" >> beam.CombinePerKey(sum)
            | "Format" >> beam.MapTuple(lambda k, v: f"{k}:{v}")
            | "Write" >> beam.io.WriteToText(str(out_dir / "part"), file_name_suffix=".txt"))
    assert p.result.state == PipelineState.DONE, p.result.state
    files = glob.glob(str(out_dir / "part*.txt"))
    assert files, f"no output files in {out_dir}: {os.listdir(out_dir)}"
    lines: set[str] = set()
    for f in files:
        with open(f) as fh:
            lines.update(line.strip() for line in fh if line.strip())
    return lines


def _assert_no_download(caplog) -> None:
    for rec in caplog.records:
        msg = rec.getMessage()
        assert "ownloading" not in msg, msg
        assert "https://" not in msg and "http://" not in msg.replace("http://127.0.0.1", ""), msg


@pytest.fixture(scope="module")
def flink_cluster():
    with FlinkCluster(slots=2) as cluster:
        yield cluster


def _finished_jobs(cluster) -> int:
    return sum(j["state"] == "FINISHED" for j in cluster.rest("/jobs/overview")["jobs"])


# When Flink closes the Fn API data channels at job end, the LOOPBACK SDK
# harness thread may log/raise a gRPC CANCELLED ("Multiplexer hanging up"):
# harmless teardown noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("use_job_endpoint", [True, False], ids=["own-job-server", "beam-started-job-server"])
def test_flink_runner_on_real_cluster(flink_cluster, tmp_path, caplog, use_job_endpoint):
    caplog.set_level(logging.INFO)
    finished_before = _finished_jobs(flink_cluster)
    start = time.monotonic()
    lines = _run_pipeline(flink_cluster.pipeline_args(use_job_endpoint=use_job_endpoint), tmp_path)
    _log.warning("FlinkRunner smoke pipeline took %.1fs", time.monotonic() - start)
    assert lines == EXPECTED
    # The job really ran on the standalone cluster.
    assert _finished_jobs(flink_cluster) == finished_before + 1
    _assert_no_download(caplog)


def test_prism_runner(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    start = time.monotonic()
    lines = _run_pipeline(prism_pipeline_args() + ["--environment_type=LOOPBACK"], tmp_path)
    _log.warning("PrismRunner smoke pipeline took %.1fs", time.monotonic() - start)
    assert lines == EXPECTED
    _assert_no_download(caplog)

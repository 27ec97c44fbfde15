"""Helpers to run Beam pipelines on real engines in tests (not tests).

The engines are installed by ``.ci/install_engines.sh`` into a cache dir
(``$ENGINES_DIR``, default ``~/.cache/dicom-meta-engines``), which also writes
``$ENGINES_DIR/engines.env``.  This module finds them through, in order:

* the environment variables ``FLINK_HOME``, ``BEAM_FLINK_JOB_SERVER_JAR``,
  ``BEAM_PRISM_BINARY`` (as exported by ``engines.env``);
* the ``engines.env`` file in ``$ENGINES_DIR`` / the default cache dir.

A missing engine raises :class:`EngineNotInstalled` (tests fail, they are
not skipped).

Usage from a pytest fixture::

    @pytest.fixture(scope="session")
    def flink_cluster():
        with FlinkCluster() as cluster:
            yield cluster

    options = cluster.pipeline_args()          # FlinkRunner options
    options = prism_pipeline_args()            # PrismRunner options

Every process started here (JobManager, TaskManager, job server) is owned by
PID and stopped on exit.  Flink itself binds only 127.0.0.1; Beam's own gRPC
servers (job server ports, Fn API servers inside the TaskManager, the Python
LOOPBACK worker pool, Prism's job port) listen on all interfaces and Beam has
no option to change that.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

DEFAULT_ENGINES_DIR = Path.home() / ".cache" / "dicom-meta-engines"
INSTALL_HINT = "run `bash .ci/install_engines.sh` (then optionally `source $ENGINES_DIR/engines.env`)"


class EngineNotInstalled(RuntimeError):
    """An engine (Flink, the Beam job server jar, Prism) is not installed."""


def engines_dir() -> Path:
    return Path(os.environ.get("ENGINES_DIR") or DEFAULT_ENGINES_DIR)


def _env_file_values() -> dict[str, str]:
    """Values of ``engines.env`` written by the install script (if any)."""
    path = engines_dir() / "engines.env"
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            m = re.match(r'\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)="?([^"]*)"?\s*$', line)
            if m:
                values[m.group(1)] = m.group(2)
    return values


def _setting(name: str) -> str | None:
    return os.environ.get(name) or _env_file_values().get(name)


def flink_home() -> Path:
    """FLINK_HOME of the installed standalone Flink distribution."""
    value = _setting("FLINK_HOME")
    if not value:
        raise EngineNotInstalled(f"Flink is not installed (FLINK_HOME unset and no {engines_dir()}/engines.env): {INSTALL_HINT}")
    home = Path(value)
    for needed in ("bin/jobmanager.sh", "bin/taskmanager.sh", "bin/config.sh", "bin/bash-java-utils.jar"):
        if not (home / needed).is_file():
            raise EngineNotInstalled(f"FLINK_HOME={home} is not a complete Flink distribution (missing {needed}): {INSTALL_HINT}")
    if not list((home / "lib").glob("flink-dist*.jar")):
        raise EngineNotInstalled(f"FLINK_HOME={home} has no lib/flink-dist*.jar: {INSTALL_HINT}")
    return home


def flink_job_server_jar() -> Path:
    """Path of the Beam Flink job server jar (never a URL: Beam must not download)."""
    value = _setting("BEAM_FLINK_JOB_SERVER_JAR")
    if not value or not Path(value).is_file():
        raise EngineNotInstalled(f"Beam Flink job server jar not found ({value!r}): {INSTALL_HINT}")
    return Path(value)


def beam_flink_version() -> str:
    """The Flink minor version the job server jar was built for (e.g. '1.19')."""
    return _setting("BEAM_FLINK_VERSION") or "1.19"


def prism_binary() -> Path:
    """Path of the locally installed Prism binary (never downloaded by Beam)."""
    value = _setting("BEAM_PRISM_BINARY")
    if not value:
        raise EngineNotInstalled(f"Prism is not installed (BEAM_PRISM_BINARY unset): {INSTALL_HINT}")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise EngineNotInstalled(f"Prism binary {path} missing or not executable: {INSTALL_HINT}")
    return path


def prism_pipeline_args() -> list[str]:
    """Pipeline args that run on Beam's PrismRunner with the local binary."""
    return ["--runner=PrismRunner", f"--prism_location={prism_binary()}"]


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Stack traces that Beam's Flink runner logs in the TaskManager for runs that succeed,
# which no setting of ours avoids (README, "Run on Flink"): the exception's line -> why.
KNOWN_FLINK_TRACES = {
    # WARN "Error cleaning up servers": closing an environment after each wave of stages,
    # Beam closes a state stream the SDK worker had already closed (apache/beam#21490).
    r"java\.lang\.IllegalStateException: call already closed$": "apache/beam#21490",
    # After the job, the vendored gRPC's event loop shuts down and loads a class from the
    # job's class loader, which Flink has already released (apache/beam#19210).
    r"java\.lang\.NoClassDefFoundError: org/apache/beam/vendor/grpc/[^/]+/io/netty/":
        "apache/beam#19210",
}


class FlinkCluster:
    """A real standalone Flink session cluster on 127.0.0.1.

    JobManager and TaskManager run as two separate JVMs started with
    ``bin/{jobmanager,taskmanager}.sh start-foreground`` (which exec java, so
    the Popen PID is the JVM's), each in its own process group.  Unless
    ``job_server=False``, the Beam Flink job server jar is started as a third
    JVM (``java -jar <jar> --flink-master ...``) that pipelines reach through
    ``--job_endpoint``; otherwise Beam's FlinkRunner starts the jar itself
    (``--flink_job_server_jar``) and keeps it until the interpreter exits.
    On exit all of them are stopped by PID / process group (SIGTERM, then
    SIGKILL).
    """

    def __init__(self, slots: int = 2, jobmanager_memory: str = "1024m",
                 taskmanager_memory: str = "1536m", startup_timeout: float = 120.0,
                 work_dir: str | os.PathLike | None = None, job_server: bool = True,
                 extra_config: dict | None = None):
        self.flink_home = flink_home()
        self.job_server_jar = flink_job_server_jar()
        self.flink_version = beam_flink_version()
        self.slots = slots
        self.jobmanager_memory = jobmanager_memory
        self.taskmanager_memory = taskmanager_memory
        self.startup_timeout = startup_timeout
        self._work_dir_arg = work_dir
        self._own_work_dir = False
        self.work_dir: Path | None = None
        self.rest_port: int | None = None
        self.rpc_port: int | None = None
        self.jobmanager: subprocess.Popen | None = None
        self.taskmanager: subprocess.Popen | None = None
        self.start_job_server = job_server
        self.job_server: subprocess.Popen | None = None
        self.job_port: int | None = None
        # Flink config keys (dotted, e.g. "heartbeat.timeout") set on top of the installed config.
        self.extra_config = dict(extra_config or {})
        self._env: dict | None = None
        self._taskmanagers_started = 0

    # -- public API --------------------------------------------------------
    @property
    def flink_master(self) -> str:
        """``127.0.0.1:<rest port>``, the value for ``--flink_master``."""
        return f"127.0.0.1:{self.rest_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def log_dir(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "log"

    @property
    def job_endpoint(self) -> str | None:
        """``127.0.0.1:<port>`` of the job server this cluster started, if any."""
        return f"127.0.0.1:{self.job_port}" if self.job_server is not None else None

    def pipeline_args(self, environment_type: str = "LOOPBACK", parallelism: int = 1,
                      use_job_endpoint: bool = True) -> list[str]:
        """FlinkRunner args submitting to this cluster through the local job server jar.

        LOOPBACK runs the Python SDK harness inside the submitting process
        (so DoFns see this machine's files); PROCESS/DOCKER need more setup.
        ``use_job_endpoint=False`` lets Beam start the job server jar itself.
        """
        args = [
            "--runner=FlinkRunner",
            f"--flink_master={self.flink_master}",
            f"--flink_version={self.flink_version}",
            f"--environment_type={environment_type}",
            f"--parallelism={parallelism}",
        ]
        if use_job_endpoint and self.job_endpoint:
            args.append(f"--job_endpoint={self.job_endpoint}")
        else:
            args.append(f"--flink_job_server_jar={self.job_server_jar}")
        return args

    def rest(self, path: str):
        with urllib.request.urlopen(self.rest_url + path, timeout=5) as resp:
            return json.load(resp)

    def logs(self, max_chars: int = 4000) -> str:
        """Tail of the cluster's stdout/log files, for failure messages."""
        out = []
        if self.work_dir and self.log_dir.is_dir():
            for f in sorted(self.log_dir.iterdir()):
                if f.is_file():
                    text = f.read_text(errors="replace")
                    out.append(f"===== {f.name} =====\n{text[-max_chars:]}")
        return "\n".join(out)

    def unexplained_stack_traces(self) -> list[str]:
        """The first line of every Java stack trace in the cluster's logs that is not one
        of ``KNOWN_FLINK_TRACES`` (Beam's, logged by successful runs too)."""
        found = []
        for path in sorted(self.log_dir.iterdir()) if self.log_dir.is_dir() else ():
            lines = path.read_text(errors="replace").splitlines()
            for before, line in zip([""] + lines, lines):
                if line.startswith("\tat ") and not before.startswith(("\tat ", "\t...")) \
                        and not before.startswith("Caused by") \
                        and not any(re.match(known, before) for known in KNOWN_FLINK_TRACES):
                    found.append(f"{path.name}: {before}")
        return found

    def start(self) -> "FlinkCluster":
        if self._work_dir_arg is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="flink-cluster-"))
            self._own_work_dir = True
        else:
            self.work_dir = Path(self._work_dir_arg)
            self.work_dir.mkdir(parents=True, exist_ok=True)
        self.rest_port = free_port()
        self.rpc_port = free_port()
        conf_dir = self._write_conf()
        self.log_dir.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(FLINK_HOME=str(self.flink_home), FLINK_CONF_DIR=str(conf_dir),
                   FLINK_LOG_DIR=str(self.log_dir))
        env.pop("HADOOP_CLASSPATH", None)
        # Flink's scripts keep pid files in FLINK_PID_DIR (default /tmp, shared by every
        # cluster on the machine); ours go to this cluster's own folder.
        env["FLINK_PID_DIR"] = str(self.work_dir / "pid")
        self._env = env
        try:
            self.jobmanager = self._spawn("jobmanager", env)
            self.start_taskmanager(wait=False)
            self._wait_ready()
            if self.start_job_server:
                self._start_job_server(env)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in (self.job_server, self.taskmanager, self.jobmanager):
            if proc is not None:
                _terminate(proc)
        self.job_server = self.taskmanager = self.jobmanager = None
        # ENGINES_KEEP_LOGS=1 keeps the temporary work dir (conf/, log/) for debugging.
        if self._own_work_dir and self.work_dir is not None and not os.environ.get("ENGINES_KEEP_LOGS"):
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def kill_taskmanager(self) -> int:
        """SIGKILL the TaskManager JVM by its PID (no shutdown hooks: as if the host
        died) and reap it. Returns the PID it had."""
        proc = self.taskmanager
        assert proc is not None and proc.poll() is None, "no running TaskManager"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _terminate(proc)  # anything left in its process group
        self.taskmanager = None
        return proc.pid

    def start_taskmanager(self, wait: bool = True) -> subprocess.Popen:
        """Start a (new) TaskManager JVM; with ``wait``, until the JobManager lists a
        TaskManager it did not list before (the killed one may stay listed until its
        heartbeat times out)."""
        assert self._env is not None and self.taskmanager is None
        known = self._taskmanager_ids() if wait else set()
        self._taskmanagers_started += 1
        n = self._taskmanagers_started
        self.taskmanager = self._spawn("taskmanager", self._env,
                                       log_name="taskmanager" if n == 1 else f"taskmanager-{n}")
        if wait:
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self.taskmanager.poll() is not None:
                    raise RuntimeError(f"Flink TaskManager exited with code {self.taskmanager.returncode}\n{self.logs()}")
                if self._taskmanager_ids() - known:
                    return self.taskmanager
                time.sleep(0.3)
            raise TimeoutError(f"new TaskManager not registered after {self.startup_timeout}s\n{self.logs()}")
        return self.taskmanager

    def _taskmanager_ids(self) -> set[str]:
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            return {tm["id"] for tm in self.rest("/taskmanagers")["taskmanagers"]}
        return set()

    def __enter__(self) -> "FlinkCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------
    def _write_conf(self) -> Path:
        """The installed cluster config (.ci/install_engines.sh: loopback binding, Java 17
        flags, network buffers for Beam), with this cluster's own ports, sizes and tmp."""
        assert self.work_dir is not None
        conf_dir = self.work_dir / "conf"
        shutil.copytree(self.flink_home / "conf", conf_dir, dirs_exist_ok=True)
        tmp_dir = self.work_dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        config = yaml.safe_load((self.flink_home / "conf" / "config.yaml").read_text())
        for key, value in {
            "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.memory.process.size": self.jobmanager_memory,
            "taskmanager.rpc.port": "0",
            "taskmanager.data.port": 0,
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": self.taskmanager_memory,
            "rest.port": self.rest_port,
            # The TaskManager may start before the JobManager listens; retry quickly
            # instead of Flink's default 10 s back-off.
            "cluster.registration.error-delay": 500,
            "cluster.registration.refused-registration-delay": 500,
            "io.tmp.dirs": str(tmp_dir),
            **self.extra_config,
        }.items():
            *parents, leaf = key.split(".")
            node = config
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value
        (conf_dir / "config.yaml").write_text(yaml.safe_dump(config))
        return conf_dir

    def _spawn(self, role: str, env: dict, cmd: list[str] | None = None,
               log_name: str | None = None) -> subprocess.Popen:
        assert self.work_dir is not None
        out = open(self.log_dir / f"{log_name or role}.stdout", "wb")
        try:
            return subprocess.Popen(
                cmd or [str(self.flink_home / "bin" / f"{role}.sh"), "start-foreground"],
                cwd=self.work_dir, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()

    def _start_job_server(self, env: dict) -> None:
        assert self.work_dir is not None
        self.job_port = free_port()
        java = str(Path(env["JAVA_HOME"]) / "bin" / "java") if env.get("JAVA_HOME") else "java"
        cmd = [java, "-jar", str(self.job_server_jar),
               "--flink-master", self.rest_url,
               "--job-host", "127.0.0.1", "--job-port", str(self.job_port),
               "--artifact-port", "0",
               "--expansion-port", "-1",  # no Java expansion service needed
               "--artifacts-dir", str(self.work_dir / "artifacts")]
        self.job_server = self._spawn("jobserver", env, cmd)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.job_server.poll() is not None:
                raise RuntimeError(f"Beam job server exited with code {self.job_server.returncode}\n{self.logs()}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.job_port), timeout=1):
                    return
            time.sleep(0.3)
        raise TimeoutError(f"Beam job server not listening after {self.startup_timeout}s\n{self.logs()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            for role, proc in (("jobmanager", self.jobmanager), ("taskmanager", self.taskmanager)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"Flink {role} exited with code {proc.returncode}\n{self.logs()}")
            try:
                overview = self.rest("/overview")
                if overview.get("taskmanagers", 0) >= 1 and overview.get("slots-available", 0) >= 1:
                    return
            except (urllib.error.URLError, OSError, ValueError) as e:
                last_error = e
            time.sleep(0.5)
        raise TimeoutError(f"Flink cluster not ready after {self.startup_timeout}s "
                           f"(last error: {last_error})\n{self.logs()}")


def _terminate(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a process started with start_new_session=True, by PID and group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left in the group (the JVM's children, if any).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)

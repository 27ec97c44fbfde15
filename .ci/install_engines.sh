#!/usr/bin/env bash
# Installs the execution engines used by the engine tests, from package
# registries only (PyPI, Maven Central, Go module proxy):
#
#   * a standalone Apache Flink distribution (FLINK_HOME) assembled from the
#     PyPI packages apache-flink (bin/, conf/) and apache-flink-libraries
#     (lib/, opt/, plugins/, bin/bash-java-utils.jar);
#   * a Beam Flink job server jar, built with Maven from
#     org.apache.beam:beam-runners-flink-<flink> (see .ci/flink-job-server/pom.xml
#     for why it is built rather than downloaded);
#   * Beam's Prism runner binary, via `go install` from the Go module proxy.
#
# Everything goes into a cache dir ($ENGINES_DIR, default
# $HOME/.cache/dicom-meta-engines); nothing is installed into the Python
# environment.  Idempotent: finished steps are skipped on re-runs.
#
# Writes $ENGINES_DIR/engines.env (FLINK_HOME, BEAM_FLINK_JOB_SERVER_JAR,
# BEAM_PRISM_BINARY, ...) for `source`-ing; tests/engines.py reads the same
# variables, or falls back to this default layout.
#
# Usage: bash .ci/install_engines.sh [--env-file PATH]
set -euo pipefail

ENGINES_DIR="${ENGINES_DIR:-$HOME/.cache/dicom-meta-engines}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# One Beam release for the Python SDK, the Flink job server and Prism: the one
# setup.py pins (apache-beam[extras]==X.Y.Z). 2.70.0 is the newest release whose Flink
# runner (beam-runners-flink-1.19) Maven Central serves here; 2.71-2.77: not found.
BEAM_VERSION="${BEAM_VERSION:-$(sed -n 's/.*"apache-beam\(\[[a-z,]*\]\)\{0,1\}==\([0-9.]*\)".*/\2/p' "$HERE/../setup.py" | head -1)}"
if [[ -z "$BEAM_VERSION" ]]; then
  echo "[install_engines] no apache-beam==X.Y.Z pin found in setup.py; set BEAM_VERSION" >&2; exit 1
fi
# Flink 1.19: the newest Flink line for which a Beam Flink runner is served
# here at that release. The cluster must be the Flink line the runner is built for.
FLINK_VERSION="${FLINK_VERSION:-1.19.3}"
BEAM_FLINK_MINOR="${BEAM_FLINK_MINOR:-1.19}"
# beam-runners-java-job-service (which the job server needs) is served only up
# to 2.65.0; when it is not served at $BEAM_VERSION the jar takes this one
# (see .ci/flink-job-server/pom.xml and linkcheck.py).
BEAM_JOB_SERVICE_FALLBACK="${BEAM_JOB_SERVICE_FALLBACK:-2.65.0}"
PRISM_VERSION="${PRISM_VERSION:-v$BEAM_VERSION}"

ENV_FILE="$ENGINES_DIR/engines.env"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --env-file) ENV_FILE="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
mkdir -p "$ENGINES_DIR"
log() { echo "[install_engines] $*" >&2; }

# ---------------------------------------------------------------- Flink ----
FLINK_HOME_DIR="$ENGINES_DIR/flink-$FLINK_VERSION"
if [[ -f "$FLINK_HOME_DIR/.complete" ]]; then
  log "Flink $FLINK_VERSION already installed in $FLINK_HOME_DIR"
else
  log "installing Flink $FLINK_VERSION from PyPI into $FLINK_HOME_DIR"
  dl="$ENGINES_DIR/downloads/flink-$FLINK_VERSION"
  mkdir -p "$dl"
  # --no-deps: only the files are needed, not pyflink's Python dependencies.
  # apache-flink-libraries < 2.2 is only published as an sdist (a tarball
  # holding the jars); pip download may "prepare metadata" for it, which
  # needs nothing beyond setuptools.
  "$PYTHON" -m pip download --quiet --no-deps --dest "$dl" \
    "apache-flink==$FLINK_VERSION" "apache-flink-libraries==$FLINK_VERSION"
  rm -rf "$FLINK_HOME_DIR.tmp"
  mkdir -p "$FLINK_HOME_DIR.tmp/unpack"
  "$PYTHON" - "$dl" "$FLINK_HOME_DIR.tmp/unpack" "$FLINK_VERSION" <<'PY'
import glob, os, sys, tarfile, zipfile
dl, out, ver = sys.argv[1:]
whl = glob.glob(os.path.join(dl, f"apache_flink-{ver}-*.whl"))
if not whl:
    sys.exit(f"apache-flink {ver} wheel not found in {dl}")
with zipfile.ZipFile(whl[0]) as z:
    z.extractall(os.path.join(out, "whl"),
                 [n for n in z.namelist()
                  if n.startswith(("pyflink/bin/", "pyflink/conf/"))])
libs = (glob.glob(os.path.join(dl, f"apache_flink_libraries-{ver}-*.whl")) +
        glob.glob(os.path.join(dl, f"apache?flink?libraries-{ver}.tar.gz")))
if not libs:
    sys.exit(f"apache-flink-libraries {ver} not found in {dl}")
if libs[0].endswith(".whl"):   # Flink >= 2.2: pyflink/{lib,opt,plugins,bin}
    with zipfile.ZipFile(libs[0]) as z:
        z.extractall(os.path.join(out, "libs"))
    root = os.path.join(out, "libs", "pyflink")
else:                           # sdist: <name>-<ver>/deps/{lib,opt,plugins,bin}
    with tarfile.open(libs[0]) as t:
        members = [m for m in t.getmembers() if "/deps/" in m.name]
        try:
            t.extractall(os.path.join(out, "libs"), members, filter="data")
        except TypeError:  # Python without tarfile extraction filters
            t.extractall(os.path.join(out, "libs"), members)
    root = glob.glob(os.path.join(out, "libs", "*", "deps"))[0]
with open(os.path.join(out, "libs_root"), "w") as f:
    f.write(root)
PY
  libs_root="$(cat "$FLINK_HOME_DIR.tmp/unpack/libs_root")"
  home="$FLINK_HOME_DIR.tmp/home"
  mkdir -p "$home/log"
  cp -r "$FLINK_HOME_DIR.tmp/unpack/whl/pyflink/bin" "$home/bin"
  cp -r "$FLINK_HOME_DIR.tmp/unpack/whl/pyflink/conf" "$home/conf"
  for d in lib opt plugins; do
    if [[ -d "$libs_root/$d" ]]; then cp -r "$libs_root/$d" "$home/$d"; else mkdir -p "$home/$d"; fi
  done
  # bin/config.sh needs bin/bash-java-utils.jar to parse the configuration.
  if [[ -d "$libs_root/bin" ]]; then cp -n "$libs_root/bin/"*.jar "$home/bin/" || true; fi
  chmod +x "$home/bin/"*.sh "$home/bin/flink"
  ls "$home/lib"/flink-dist*.jar >/dev/null
  ls "$home/bin/bash-java-utils.jar" >/dev/null
  rm -rf "$FLINK_HOME_DIR"
  mv "$home" "$FLINK_HOME_DIR"
  rm -rf "$FLINK_HOME_DIR.tmp" "$dl"
  touch "$FLINK_HOME_DIR/.complete"
fi
# Rewritten on every run, so configuration fixes reach existing installs.
# Default configuration: loopback only, modest memory, 2 slots.  Java 17
# --add-opens/--add-exports flags are kept from the shipped config.yaml.
# (tests/engines.py derives each test cluster's config from this one, with free ports.)
"$PYTHON" - "$FLINK_HOME_DIR/conf/config.yaml" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
m = re.search(r"^      all: (.*)$", text, re.M)
java_opts = m.group(1).strip() if m else ""
conf = f"""# Written by .ci/install_engines.sh (loopback-only test cluster).
env:
  java:
    opts:
      all: {java_opts}
jobmanager:
  bind-host: 127.0.0.1
  rpc:
    address: 127.0.0.1
    port: 6123
  memory:
    process:
      size: 1024m
  execution:
    failover-strategy: region
# After a failure (a TaskManager lost, a task crashed) restart up to 5 times, 5 s apart.
# Beam's batch jobs take the cluster's strategy: Beam 2.70's batch translation sets none
# (docs/engines.md). Flink's default without checkpointing is no restart at all. One lost
# TaskManager can cost two restarts (the second when a restarted task finds an input
# partition that lived on the lost TaskManager). A restart waits for free task slots, so
# a replacement TaskManager has time to register.
restart-strategy:
  type: fixed-delay
  fixed-delay:
    attempts: 5
    delay: 5 s
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: 2
  memory:
    process:
      size: 1536m
    # Beam's batch translation needs more network buffers than Flink's default
    # (10 %) for parallelism 2 (see tests/engines.py).
    network:
      min: 256mb
      max: 256mb
  network:
    # Each blocking (batch) result partition of Beam's translation asks for
    # sort-shuffle.min-buffers (Flink default 512) at once; with the full pipeline
    # several are open together. 128 keeps the run inside 256 MB.
    sort-shuffle:
      min-buffers: 128
parallelism:
  default: 1
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: 8081
blob:
  server:
    port: "0"
"""
open(path, "w").write(conf)
PY

# ------------------------------------------------------ Beam job server ----
JOB_SERVER_JAR="$ENGINES_DIR/beam-runners-flink-$BEAM_FLINK_MINOR-job-server-$BEAM_VERSION.jar"
if [[ -s "$JOB_SERVER_JAR" ]]; then
  log "Beam Flink job server already at $JOB_SERVER_JAR"
else
  # First choice: Beam's own published job server jar, if Maven Central
  # serves it for this version.
  coords="org.apache.beam:beam-runners-flink-$BEAM_FLINK_MINOR-job-server:$BEAM_VERSION"
  build="$ENGINES_DIR/build/job-server-$BEAM_FLINK_MINOR-$BEAM_VERSION"
  rm -rf "$build"; mkdir -p "$build"
  log "trying $coords from Maven Central"
  if mvn -B -q dependency:copy -Dartifact="$coords" -Dmdep.stripVersion=false \
       -DoutputDirectory="$build/published" >"$build/published.log" 2>&1; then
    cp "$build/published/"*.jar "$JOB_SERVER_JAR.tmp"
  else
    job_service="$BEAM_VERSION"
    if ! mvn -B -q dependency:get -Dtransitive=false \
         -Dartifact="org.apache.beam:beam-runners-java-job-service:$BEAM_VERSION" >"$build/job-service.log" 2>&1; then
      job_service="$BEAM_JOB_SERVICE_FALLBACK"
      log "beam-runners-java-job-service:$BEAM_VERSION is not served; using $job_service"
    fi
    log "$coords is not served; building it from beam-runners-flink-$BEAM_FLINK_MINOR:$BEAM_VERSION (job service $job_service)"
    cp "$HERE/flink-job-server/pom.xml" "$build/pom.xml"
    if ! (cd "$build" && mvn -B -q package -Dbeam.version="$BEAM_VERSION" \
            -Dbeam.jobservice.version="$job_service" \
            -Dbeam.flink.version="$BEAM_FLINK_MINOR" >"$build/build.log" 2>&1); then
      tail -50 "$build/build.log" >&2
      log "building the job server failed (log: $build/build.log)"
      exit 1
    fi
    # Every reference between the runner, job service, Fn execution and expansion
    # classes must resolve in the jar (the job service may be an older release).
    "$PYTHON" "$HERE/flink-job-server/linkcheck.py" "$build/target/beam-flink-job-server.jar" \
      org/apache/beam/runners/jobsubmission/ org/apache/beam/runners/flink/ \
      org/apache/beam/runners/fnexecution/ org/apache/beam/sdk/expansion/ >&2
    cp "$build/target/beam-flink-job-server.jar" "$JOB_SERVER_JAR.tmp"
  fi
  mv "$JOB_SERVER_JAR.tmp" "$JOB_SERVER_JAR"
  rm -rf "$build"
fi

# ---------------------------------------------------------------- Prism ----
PRISM_DIR="$ENGINES_DIR/prism-$PRISM_VERSION"
PRISM_BIN="$PRISM_DIR/prism"
if [[ -x "$PRISM_BIN" ]]; then
  log "Prism $PRISM_VERSION already at $PRISM_BIN"
else
  log "installing Prism $PRISM_VERSION via go install"
  mkdir -p "$PRISM_DIR"
  prism_module="github.com/apache/beam/sdks/v2"
  if ! GOBIN="$PRISM_DIR" GOFLAGS="${GOFLAGS:--buildvcs=false}" \
         go install "$prism_module/go/cmd/prism@$PRISM_VERSION" 2>"$PRISM_DIR/install.log"; then
    cat "$PRISM_DIR/install.log" >&2
    # The checksum database reachable here has no entry for some Beam releases
    # (v2.70.0: "verifying module: ... 404 Not Found"). Then skip that lookup for
    # the Beam module alone; its dependencies are still verified.
    grep -q "verifying module: $prism_module@$PRISM_VERSION" "$PRISM_DIR/install.log" || exit 1
    log "no checksum database entry for $prism_module@$PRISM_VERSION; installing without it"
    GOBIN="$PRISM_DIR" GOFLAGS="${GOFLAGS:--buildvcs=false}" GONOSUMDB="$prism_module" \
      go install "$prism_module/go/cmd/prism@$PRISM_VERSION"
  fi
  rm -f "$PRISM_DIR/install.log"
  test -x "$PRISM_BIN"
fi

rmdir "$ENGINES_DIR/build" "$ENGINES_DIR/downloads" 2>/dev/null || true

# ------------------------------------------------------------- env file ----
mkdir -p "$(dirname "$ENV_FILE")"
cat >"$ENV_FILE" <<EOF
# Written by .ci/install_engines.sh; source it before running engine tests.
export ENGINES_DIR="$ENGINES_DIR"
export FLINK_HOME="$FLINK_HOME_DIR"
export FLINK_VERSION="$FLINK_VERSION"
export BEAM_FLINK_VERSION="$BEAM_FLINK_MINOR"
export BEAM_VERSION="$BEAM_VERSION"
export BEAM_FLINK_JOB_SERVER_JAR="$JOB_SERVER_JAR"
export BEAM_PRISM_BINARY="$PRISM_BIN"
EOF

echo "FLINK_HOME=$FLINK_HOME_DIR"
echo "BEAM_FLINK_JOB_SERVER_JAR=$JOB_SERVER_JAR"
echo "BEAM_PRISM_BINARY=$PRISM_BIN"
echo "ENV_FILE=$ENV_FILE"

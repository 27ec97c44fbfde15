"""One writer per output: ``scan.lock`` next to ``scan.csv`` while a run holds it.

The lock is a small JSON object created only if absent, atomically, by the store:

* local: ``os.open(O_CREAT | O_EXCL)``;
* GCS: an upload with ``if_generation_match=0``;
* S3: ``put_object(..., IfNoneMatch="*")``.

It names its run (host, pid, start time, run id) and carries a heartbeat that the
holder rewrites every ``HEARTBEAT_SECONDS``. A second run finds it and either waits
(``--wait-for-lock SECONDS``) or stops with one line naming the holder, before any work.
A lock is stale when its holder is gone: same host and the pid is dead (or is another
process now), or no heartbeat for ``STALE_SECONDS``. A stale lock is replaced only if it
is still the one judged stale: GCS ``if_generation_match=<its generation>``, S3
``IfMatch=<its ETag>``; locally it is renamed aside and checked before a new one is
created. Released (deleted, only if still ours) when the run ends, whatever the outcome.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from transforms.common.atomic_files import partial_path
from transforms.inputs.storage import is_bucket, pipeline_options, scheme, split_bucket

LOCK_FORMAT = "dicom-meta-extract/lock"
LOCK_VERSION = 1
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 600.0
POLL_SECONDS = 1.0


class OutputLocked(Exception):
    """Another run holds the output; the message is one line naming it."""


class LockNotWritable(OutputLocked):
    """The lock cannot be created at all (a folder that vanished or turned read-only
    after the launcher's checks): one line, like a held lock, before any work."""


def lock_path_for(table: str) -> str:
    stem = table[: -len(".csv")] if table.lower().endswith(".csv") else table
    return stem + ".lock"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
            return stream.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    now = _process_start(pid)
    return start is None or now is None or now == start


# ---------------------------------------------------------------------------
# Stores: create if absent, read with a version token, replace/delete if unchanged


class LocalStore:
    def __init__(self, path: str):
        self.path = path

    @staticmethod
    def same(token, other) -> bool:
        return token == other

    def create(self, data: bytes):
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        except OSError as exc:
            raise LockNotWritable(
                f"cannot create the lock {self.path} ({exc.strerror or exc})"
            ) from exc
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return self.read()[1]

    def read(self):
        try:
            with open(self.path, "rb") as stream:
                data = stream.read()
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return data, (stat.st_ino, data), stat.st_mtime

    def replace(self, data: bytes, token):
        """Heartbeat: rewrite in place if the file is still ``token``'s."""
        current = self.read()
        if current is None or current[1] != token:
            return None
        partial = partial_path(self.path)
        with open(partial, "wb") as out:
            out.write(data)
        os.replace(partial, self.path)
        return self.read()[1]

    def take_over(self, data: bytes, token):
        """Replace a stale lock: move it aside, check it is the one judged stale."""
        aside = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self.create(data)
        with open(aside, "rb") as stream:
            moved = stream.read()
        if moved != token[1]:  # another run took over first: put its lock back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.remove(aside)
            return None
        os.remove(aside)
        return self.create(data)

    def delete(self, token) -> None:
        current = self.read()
        if current is not None and current[1] == token:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


class GcsStore:
    def __init__(self, path: str, options):
        from transforms.inputs.storage import gcs_client

        bucket, name = split_bucket(path)
        self.blob_name = name
        self.bucket = gcs_client(options).bucket(bucket)

    def _upload(self, data: bytes, generation: int):
        from google.api_core import exceptions

        blob = self.bucket.blob(self.blob_name)
        try:
            blob.upload_from_string(data, content_type="application/json",
                                    if_generation_match=generation)
        except exceptions.PreconditionFailed:
            return None
        return blob.generation, data

    @staticmethod
    def same(token, other) -> bool:
        # gcp-storage-emulator reports no generation when asked: compare the content.
        if token[0] is not None and other[0] is not None:
            return token[0] == other[0]
        return token[1] == other[1]

    def create(self, data: bytes):
        return self._upload(data, 0)

    def read(self):
        from google.api_core import exceptions

        blob = self.bucket.get_blob(self.blob_name)  # generation and update time
        if blob is None:
            return None
        try:
            # If the object changes between the two calls, a replace with this
            # generation is refused and the caller looks again.
            data = blob.download_as_bytes()
        except exceptions.NotFound:
            return None
        updated = blob.updated.timestamp() if blob.updated else None
        return data, (blob.generation, data), updated

    def replace(self, data: bytes, token):
        return self._upload(data, token[0])

    take_over = replace

    def delete(self, token) -> None:
        from google.api_core import exceptions

        try:
            self.bucket.blob(self.blob_name).delete(if_generation_match=token[0])
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            pass


class S3Store:
    def __init__(self, path: str, options):
        from transforms.inputs.storage import s3_client

        self.bucket, self.key = split_bucket(path)
        self.client = s3_client(options)

    same = staticmethod(LocalStore.same)

    @staticmethod
    def _refused(exc) -> bool:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in (409, 412)  # 409: a concurrent conditional write won

    def _put(self, data: bytes, **condition):
        from botocore.exceptions import ClientError

        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data,
                                              ContentType="application/json", **condition)
        except ClientError as exc:
            if self._refused(exc):
                return None
            raise
        return response["ETag"]

    def create(self, data: bytes):
        return self._put(data, IfNoneMatch="*")

    def read(self):
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        with response["Body"] as body:
            return body.read(), response["ETag"], response["LastModified"].timestamp()

    def replace(self, data: bytes, token):
        return self._put(data, IfMatch=token)

    take_over = replace

    def delete(self, token) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=token)
        except ClientError as exc:
            if not self._refused(exc) and exc.response.get(
                    "ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise


def store_for(path: str, options=None):
    if not is_bucket(path):
        return LocalStore(path[len("file://"):] if path.startswith("file://") else path)
    options = pipeline_options(options)
    return GcsStore(path, options) if scheme(path) == "gs" else S3Store(path, options)


# ---------------------------------------------------------------------------
# The lock


class OutputLock:
    """``with OutputLock(path, run_id, wait_seconds):`` holds the lock for the block."""

    def __init__(self, path: str, run_id: str, wait_seconds: float = 0.0, options=None,
                 stale_seconds: float = STALE_SECONDS,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.path = path
        self.run_id = run_id
        self.wait_seconds = wait_seconds
        self.stale_seconds = stale_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.store = store_for(path, options)
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.token = None
        self.took_over: dict | None = None  # the stale holder this run replaced
        self._stop = threading.Event()
        self._thread = None

    def _content(self) -> bytes:
        return json.dumps({
            "format": LOCK_FORMAT, "version": LOCK_VERSION, "run_id": self.run_id,
            "host": socket.gethostname(), "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()), "started": self.started,
            "heartbeat": time.time(),
        }).encode("utf-8")

    def stale_reason(self, holder: dict, modified: float | None = None) -> str | None:
        """Why the holder is gone, or None if it may still be running."""
        if not holder:  # being written (local create, then write), or foreign: by age
            age = time.time() - (modified or time.time())
            return f"unreadable lock, {age:.0f} s old" if age > self.stale_seconds else None
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not _pid_alive(holder["pid"], holder.get("pid_start")):
                return f"pid {holder['pid']} is not running on this host"
        heartbeat = holder.get("heartbeat")
        if not isinstance(heartbeat, (int, float)):
            return "the lock names no heartbeat"
        age = time.time() - heartbeat
        if age > self.stale_seconds:
            return f"no heartbeat for {age:.0f} s"
        return None

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            token = self.store.create(self._content())
            if token is not None:
                self.token = token
                break
            found = self.store.read()
            if found is None:
                continue  # released between our create and read: try again
            data, token, modified = found
            try:
                holder = json.loads(data.decode("utf-8"))
                if not isinstance(holder, dict) or holder.get("format") != LOCK_FORMAT:
                    raise ValueError("not a lock of this tool")
            except ValueError:
                holder = {}
            reason = self.stale_reason(holder, modified)
            if reason is not None:
                new = self.store.take_over(self._content(), token)
                if new is not None:
                    self.token = new
                    self.took_over = {**holder, "stale_because": reason}
                    break
                continue
            if time.monotonic() >= deadline:
                raise OutputLocked(
                    f"output is locked by another run (host {holder.get('host', '?')}, pid "
                    f"{holder.get('pid', '?')}, started {holder.get('started', '?')}, run "
                    f"{holder.get('run_id', '?')}): {self.path}; wait for it or pass "
                    "--wait-for-lock SECONDS")
            time.sleep(POLL_SECONDS)
        self._thread = threading.Thread(target=self._beat, name="output-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                token = self.store.replace(self._content(), self.token)
            except Exception:  # pylint: disable=broad-except  # try again next beat
                continue
            if token is None:
                self.token = None  # taken over (we were judged stale): not ours to delete
                return
            self.token = token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.token is not None:
            # Read first: a server that ignores a delete's precondition (fake-gcs-server
            # does) must still not lose the lock of a run that took over from us.
            current = self.store.read()
            if current is not None and self.store.same(current[1], self.token):
                self.store.delete(self.token)
            self.token = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

"""Where a DICOMweb password or bearer token lives: a file (local, ``gs://`` or ``s3://``)
or an environment variable, named by ``--dicomweb-password-file``/``-env`` and
``--dicomweb-token-file``/``-env``.

The value is read at launch, to check it (``read_secret``), and again in each worker
from the same place, when a step's first request needs it (``SecretAuth``). What is
pickled into the pipeline's steps is the place, never the value: Dataflow stages those
steps in its bucket and Flink ships them to its TaskManagers. No repr, log line or
traceback shows the value.
"""

from __future__ import annotations

import os

from transforms.inputs.storage import read_small_file


class SecretError(Exception):
    """A secret that cannot be read where it is needed: one line, without its value."""


class Secret:
    """A password or token by where it is kept (``path`` or ``env``); its value once read.

    Pickles as its place only (the module's docstring says why); unpickled, it reads
    the value again on first ``reveal``. A ``Secret(value)`` without a place works in
    this process only."""

    def __init__(self, value: str | None = None, *, path: str | None = None,
                 env: str | None = None, what: str = "secret"):
        self._value = value
        self.path, self.env, self.what = path, env, what

    def reveal(self) -> str:
        if self._value is None:
            self._value = _secret_value(self.path, self.env, self.what)
        return self._value

    def __getstate__(self):
        return {"path": self.path, "env": self.env, "what": self.what}

    def __setstate__(self, state):
        self.__init__(**state)

    def __repr__(self):
        return "Secret(***)"

    __str__ = __repr__


def read_secret(path: str | None, env: str | None, what: str) -> Secret | None:
    """The secret in file ``path`` (surrounding whitespace stripped) or environment
    variable ``env``, read now; ``SecretError`` when named but missing or empty."""
    if path and env:
        raise SecretError(f"give the {what} as a file or as an environment variable, not both")
    if not (path or env):
        return None
    secret = Secret(path=path or None, env=env or None, what=what)
    secret.reveal()
    return secret


def _secret_value(path: str | None, env: str | None, what: str) -> str:
    if path:
        try:
            value = read_small_file(path).decode("utf-8").strip()
        except (OSError, UnicodeError) as exc:
            raise SecretError(f"cannot read the {what} file {path!r}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from exc
        if not value:
            raise SecretError(f"the {what} file {path!r} is empty")
        return value
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise SecretError(f"environment variable {env} (the {what}) is not set or empty")
        return value
    raise SecretError(f"the {what} was given as a value, not as a file or an environment "
                      "variable, so it cannot be read here")


class SecretAuth:
    """``requests`` auth that reveals the secret when the first request is sent, in the
    process that sends it (a failure there is the request's error, with its reason)."""

    def __init__(self, user: str | None, secret: Secret):
        self.user, self.secret = user, secret

    def __call__(self, request):
        from requests.auth import HTTPBasicAuth

        if self.user is not None:
            return HTTPBasicAuth(self.user, self.secret.reveal())(request)
        request.headers["Authorization"] = f"Bearer {self.secret.reveal()}"
        return request

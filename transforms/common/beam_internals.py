"""The one place this project touches Beam's internals: its option parser, bucket clients
and DoFn specs.

Options: Beam's option classes declare their flags in ``_add_argparse_args(parser)``
(the documented way to define options, yet an underscored name) on a parser of Beam's
private ``_BeamArgumentParser`` class (it adds ``add_value_provider_argument`` and
ignores "ambiguous option" errors). The CLI builds one parser of every option class,
and the help and report list our own: :class:`BeamArgumentParser` and
:func:`add_option_arguments` are those two names.

Everything else reads and writes buckets through public APIs: Beam's ``FileSystems``,
``google.cloud.storage.Client.create_anonymous_client()`` and boto3 with
``botocore.UNSIGNED`` (``transforms/inputs/storage.py``, which decides when access is
anonymous and calls :func:`prepare_filesystems`). Three things have no public switch:

* GCS: before its first call in every process, Beam's ``GCSFileSystem`` asks
  ``apache_beam.internal.gcp.auth`` for Application Default Credentials, retrying with
  back-off: ~20 s per process on a machine without them (an emulator, a public bucket).
  When access is anonymous, :func:`prepare_filesystems` fills Beam's credential cache
  with "no credentials" (what Beam itself caches after the lookup fails), so Beam builds
  its anonymous client at once. Beam's ``--no_auth`` is read by the Dataflow runner only.
* The options a worker's ``FileSystems`` were given (``FileSystems.set_options`` has no
  getter): :func:`filesystems_options`, so bucket helpers see ``--anonymous-access``
  and the ``--s3_*`` options on workers too.
* S3 with ``--anonymous-access``: Beam's boto3 wrapper always builds a signing client,
  which walks the AWS credential chain (up to the EC2 metadata service) and then fails
  for lack of keys. Here its client is built unsigned, with the same options.

One more has no public switch and costs the runner's process time before any file is
read: building a pipeline asks ``apache_beam.transforms.userstate.get_dofn_specs`` for
each DoFn's state and timer specs four or five times (``ParDo``'s checks, the runner
API's proto, the runner's signature), and each answer inspects the signature of every
method the DoFn has: 0.6-0.7 s of the 1.3-1.7 s that building this project's pipeline
and its proto take. :func:`remember_dofn_specs` keeps each DoFn object's answer (the
same object gives the same methods; copies are handed out, so no caller changes the
kept one). The launcher calls it before it builds the pipeline; Beam then answers as
before, once per DoFn object.

Nothing happens at import (beyond importing Beam). ``storage.prepare_filesystems`` calls this explicitly: from
the CLI before its checks, and in ``setup`` of each step that uses ``FileSystems`` on
workers (idempotent, per process). ``tests/test_beam_internals.py`` fails loudly when Beam
changes what this relies on.
"""

from __future__ import annotations

import argparse
import threading

from apache_beam.options.pipeline_options import _BeamArgumentParser

# pylint: disable=protected-access


class BeamArgumentParser(_BeamArgumentParser):
    """The parser Beam's option classes expect (``add_value_provider_argument``)."""


def add_option_arguments(option_class, parser: argparse.ArgumentParser) -> None:
    """Add the flags ``option_class`` (a ``PipelineOptions`` subclass) declares to
    ``parser``, as Beam does when it parses options."""
    option_class._add_argparse_args(parser)


_lock = threading.Lock()


def filesystems_options():
    """What ``FileSystems.set_options`` (or the worker's start-up) gave, or None."""
    from apache_beam.io.filesystems import FileSystems

    return getattr(FileSystems, "_pipeline_options", None)


def prepare_filesystems(anonymous_schemes, unsigned_s3_client_for=None) -> None:
    """Make Beam's GCS / S3 clients in this process anonymous for ``anonymous_schemes``
    (``"gs"``, ``"s3"``). ``unsigned_s3_client_for(options)``: the client Beam's S3
    wrapper should use for those options, or None to sign as usual. Idempotent, and
    applied again at every call: something else in the process (a test's clean-up, a
    library) may have reset Beam's credential cache since."""
    with _lock:
        for scheme in anonymous_schemes:
            if scheme == "gs":
                _gcs_without_credentials()
            elif scheme == "s3":
                _unsigned_beam_s3_client(unsigned_s3_client_for)


def _gcs_without_credentials() -> None:
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # no gcp extra: Beam has no GCS filesystem to prepare
        return
    cache = auth._Credentials
    with cache._credentials_lock:
        cache._credentials = None
        cache._credentials_init = True


def _unsigned_beam_s3_client(unsigned_s3_client_for) -> None:
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:  # no aws extra
        return
    if getattr(boto3_client, "boto3", None) is None:
        return
    client_class = boto3_client.Client
    if getattr(client_class.__init__, "dicom_meta_unsigned", False):
        return
    signed_init = client_class.__init__

    def init(self, options):
        from apache_beam.options.pipeline_options import PipelineOptions

        unsigned = (unsigned_s3_client_for(options)
                    if isinstance(options, PipelineOptions) else None)
        if unsigned is None:
            signed_init(self, options)
            return
        self.client = unsigned
        self._download_request = None
        self._download_stream = None
        self._download_pos = 0

    init.dicom_meta_unsigned = True
    client_class.__init__ = init


# The FnApiRunner logs (at DEBUG) the fused stage of every bundle it starts, in the order
# it runs them; the benchmarks' stage profile reads that to time each stage.
_BUNDLE_LOGGER = "apache_beam.runners.portability.fn_api_runner.fn_runner.run_bundle"
_BUNDLE_MESSAGE = "Running bundle for stage %s"


def fused_stage_of(record) -> str | None:
    """The fused stage's name when ``record`` is the FnApiRunner starting a bundle."""
    if record.name == _BUNDLE_LOGGER and record.msg.startswith(_BUNDLE_MESSAGE):
        return str(record.args[0])
    return None


def bundle_logger_name() -> str:
    """The logger that ``fused_stage_of`` reads: set it to DEBUG to receive the records."""
    return _BUNDLE_LOGGER


def remember_dofn_specs() -> None:
    """Make Beam's ``userstate.get_dofn_specs`` remember its answer per DoFn object, in
    this process (idempotent)."""
    import weakref

    from apache_beam.transforms import userstate

    with _lock:
        asked = userstate.get_dofn_specs
        if getattr(asked, "dicom_meta_remembered", False):
            return
        answers: dict = {}

        def get_dofn_specs(dofn):
            kept = answers.get(id(dofn))
            if kept is not None and kept[0]() is dofn:  # not another object at that id
                return set(kept[1]), set(kept[2])
            states, timers = asked(dofn)
            try:
                reference = weakref.ref(dofn, lambda _, key=id(dofn): answers.pop(key, None))
            except TypeError:  # an object without weak references: asked every time
                return states, timers
            answers[id(dofn)] = (reference, frozenset(states), frozenset(timers))
            return states, timers

        get_dofn_specs.dicom_meta_remembered = True
        get_dofn_specs.__wrapped__ = asked
        userstate.get_dofn_specs = get_dofn_specs

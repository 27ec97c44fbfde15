"""The one adapter that touches Beam internals (transforms/common/beam_internals.py): these
fail loudly when a Beam release changes what it relies on, and check that importing
this project changes nothing in Beam."""

from __future__ import annotations

import inspect
import subprocess
import sys

from apache_beam.options.pipeline_options import PipelineOptions

import transforms.common.beam_internals as adapter


def test_beam_gcs_credential_cache_is_where_the_adapter_fills_it():
    from apache_beam.internal.gcp import auth
    from apache_beam.io.gcp import gcsio

    cache = auth._Credentials
    assert isinstance(cache._credentials_lock, type(__import__("threading").Lock()))
    assert hasattr(cache, "_credentials") and hasattr(cache, "_credentials_init")
    # Beam consults the cache first, and builds an anonymous client when it holds None.
    assert "_credentials_init" in inspect.getsource(cache.get_service_credentials)
    source = inspect.getsource(gcsio.create_storage_client)
    assert "get_service_credentials" in source and "create_anonymous_client" in source


def test_beam_s3_client_wrapper_is_what_the_adapter_replaces():
    from apache_beam.io.aws.clients.s3 import boto3_client

    init = boto3_client.Client.__init__
    init = getattr(init, "__wrapped__", init)
    assert list(inspect.signature(boto3_client.Client.__init__).parameters) == ["self", "options"]
    for attribute in ("self.client", "_download_request", "_download_stream", "_download_pos"):
        assert attribute in inspect.getsource(boto3_client.Client), attribute


def test_filesystems_keeps_its_options_where_the_adapter_reads_them():
    from apache_beam.io.filesystems import FileSystems

    options = PipelineOptions(["--s3_region_name=eu-west-3"])
    FileSystems.set_options(options)
    try:
        assert adapter.filesystems_options() is options
    finally:
        FileSystems.set_options(None)


def test_importing_the_project_patches_nothing():
    code = (
        "from apache_beam.internal.gcp import auth\n"
        "from apache_beam.io.aws.clients.s3 import boto3_client\n"
        "from apache_beam.transforms import userstate\n"
        "before = (auth.get_service_credentials, boto3_client.Client.__init__,"
        " auth._Credentials._credentials_init, userstate.get_dofn_specs)\n"
        "import transforms, transforms.inputs.storage, transforms.reading.extract, beam_pipeline.cli,"
        " beam_pipeline.pipeline, beam_pipeline.launch\n"
        "after = (auth.get_service_credentials, boto3_client.Client.__init__,"
        " auth._Credentials._credentials_init, userstate.get_dofn_specs)\n"
        "assert before == after, (before, after)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prepare_fills_the_gcs_cache_only_when_anonymous(monkeypatch):
    from apache_beam.internal.gcp import auth

    code = (
        "import os\n"
        "from apache_beam.internal.gcp import auth\n"
        "from transforms.inputs import storage\n"
        "storage.prepare_filesystems()\n"
        "print(auth._Credentials._credentials_init)\n"
    )
    env_with = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}
    import os

    base = {key: value for key, value in os.environ.items() if key != "STORAGE_EMULATOR_HOST"}
    outputs = [subprocess.run([sys.executable, "-c", code], env={**base, **env}, check=True,
                              capture_output=True, text=True).stdout.strip()
               for env in (env_with, {})]
    assert outputs == ["True", "False"]
    assert auth is not None


def test_fn_api_runner_logs_each_bundle_with_its_fused_stage():
    """The stage profile (benchmarks/stage_profile.py) times stages by these records."""
    import logging

    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    stages = []

    class Seen(logging.Handler):
        def emit(self, record):
            stage = adapter.fused_stage_of(record)
            if stage is not None:
                stages.append(stage)

    logger = logging.getLogger(adapter.bundle_logger_name())
    handler, level = Seen(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with beam.Pipeline(runner=fn_runner.FnApiRunner()) as pipeline:
            _ = (pipeline | "Numbers" >> beam.Create([1, 2]) | "Grouped" >> beam.Reshuffle()
                 | "Doubled" >> beam.Map(lambda x: 2 * x))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any("Numbers" in stage for stage in stages), stages
    assert any("Doubled" in stage for stage in stages), stages


def test_beam_option_classes_declare_flags_on_the_parser_the_adapter_gives():
    """Beam's own parsing builds a ``_BeamArgumentParser`` and calls each option class's
    ``_add_argparse_args(parser)``: the CLI, help and report do the same through the adapter."""
    import argparse

    from apache_beam.options import pipeline_options

    assert issubclass(adapter.BeamArgumentParser, pipeline_options._BeamArgumentParser)
    assert issubclass(adapter.BeamArgumentParser, argparse.ArgumentParser)
    hook = inspect.getattr_static(PipelineOptions, "_add_argparse_args")
    assert isinstance(hook, classmethod)
    assert list(inspect.signature(PipelineOptions._add_argparse_args).parameters) == ["parser"]
    source = inspect.getsource(PipelineOptions)
    assert "_BeamArgumentParser(" in source and "._add_argparse_args(parser)" in source
    parser = adapter.BeamArgumentParser(allow_abbrev=False)
    adapter.add_option_arguments(pipeline_options.StandardOptions, parser)
    adapter.add_option_arguments(pipeline_options.GoogleCloudOptions, parser)  # value providers
    args = parser.parse_args(["--runner=DirectRunner", "--project=p"])
    assert (args.runner, args.project) == ("DirectRunner", "p")


def test_dofn_specs_are_asked_through_the_module_the_adapter_wraps():
    """Building a pipeline asks ``userstate.get_dofn_specs`` (by the module's name) several
    times per DoFn; once remembered, Beam's own function answers once per DoFn object,
    and a stateful DoFn is still seen as one."""
    code = (
        "import apache_beam as beam\n"
        "from apache_beam.transforms import userstate\n"
        "from apache_beam.coders import VarIntCoder\n"
        "import transforms.common.beam_internals as adapter\n"
        "asked = []\n"
        "original = userstate.get_dofn_specs\n"
        "def counted(dofn):\n"
        "    asked.append(id(dofn))\n"
        "    return original(dofn)\n"
        "userstate.get_dofn_specs = counted\n"
        "class Counting(beam.DoFn):\n"
        "    COUNT = userstate.BagStateSpec('count', VarIntCoder())\n"
        "    def process(self, element, count=beam.DoFn.StateParam(COUNT)):\n"
        "        yield element\n"
        "def build():\n"
        "    pipeline = beam.Pipeline()\n"
        "    keyed = pipeline | beam.Create([(1, 2)]) | beam.Map(lambda kv: kv)\n"
        "    _ = keyed | beam.ParDo(Counting())\n"
        "    pipeline.to_runner_api()\n"
        "    return pipeline\n"
        "build()\n"
        "plain = len(asked)\n"
        "adapter.remember_dofn_specs()\n"
        "adapter.remember_dofn_specs()\n"
        "asked.clear()\n"
        "build()\n"
        "stateful = Counting()\n"
        "states, timers = userstate.get_dofn_specs(stateful)\n"
        "states.clear()\n"
        "assert userstate.is_stateful_dofn(stateful)\n"
        "assert [spec.name for spec in userstate.get_dofn_specs(stateful)[0]] == ['count']\n"
        "print(plain, len(asked), len(set(asked)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True)
    plain, remembered, objects = map(int, result.stdout.split())
    # Beam asks several times per DoFn object; remembered, once per object.
    assert plain > 2 * objects, (plain, objects)
    assert remembered == objects, (remembered, objects)

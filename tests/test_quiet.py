"""The runner's hang-ups stay quiet (``beam_pipeline/quiet.py``): a real gRPC stream that
the server cancels, as Flink's and Prism's runners cancel the LOOPBACK worker's data
stream when they tear an environment down, and one that fails otherwise."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
import pytest

from beam_pipeline.quiet import (
    DATA_PLANE_FAILURE, DATA_PLANE_LOGGER, RunnerHangUps, quiet_thread_hang_ups,
    runner_hung_up,
)

DATA_PLANE_THREAD, STATE_THREAD = "read_grpc_client_inputs", "read_state"  # Beam's names


@pytest.fixture(scope="module")
def stream_errors():
    """{status: the RpcError a client's stream iterator raised} from a real server."""

    def stream(request, context):
        yield b"first"
        status = {b"cancel": grpc.StatusCode.CANCELLED,
                  b"lost": grpc.StatusCode.UNAVAILABLE}[request]
        context.abort(status, "Multiplexer hanging up")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "Data", {"Stream": grpc.unary_stream_rpc_method_handler(stream)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    errors = {}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream("/Data/Stream")
            for request in (b"cancel", b"lost"):
                with pytest.raises(grpc.RpcError) as raised:
                    list(call(request, timeout=10))
                errors[raised.value.code()] = raised.value
    finally:
        server.stop(None)
    return errors


def _record(message: str, error: BaseException) -> logging.LogRecord:
    return logging.getLogger(DATA_PLANE_LOGGER).makeRecord(
        DATA_PLANE_LOGGER, logging.ERROR, __file__, 1, message, (), (type(error), error, None))


def test_a_cancelled_data_stream_is_dropped_anything_else_kept(stream_errors):
    cancelled = stream_errors[grpc.StatusCode.CANCELLED]
    lost = stream_errors[grpc.StatusCode.UNAVAILABLE]
    assert runner_hung_up(cancelled) and not runner_hung_up(lost)
    assert not runner_hung_up(RuntimeError("CANCELLED")) and not runner_hung_up(None)
    quiet = RunnerHangUps()
    assert not quiet.filter(_record(DATA_PLANE_FAILURE, cancelled))
    assert quiet.filter(_record(DATA_PLANE_FAILURE, lost))
    assert quiet.filter(_record("Some other failure.", cancelled))


def test_the_reader_threads_re_raise_is_dropped_only_for_a_hang_up(stream_errors):
    seen = []
    hook = quiet_thread_hang_ups(lambda args: seen.append((args.thread.name, args.exc_value)))
    previous, threading.excepthook = threading.excepthook, hook
    try:
        for name, error in ((DATA_PLANE_THREAD, stream_errors[grpc.StatusCode.CANCELLED]),
                            (STATE_THREAD, stream_errors[grpc.StatusCode.CANCELLED]),
                            (DATA_PLANE_THREAD, stream_errors[grpc.StatusCode.UNAVAILABLE]),
                            (STATE_THREAD, stream_errors[grpc.StatusCode.UNAVAILABLE]),
                            ("another_thread", stream_errors[grpc.StatusCode.CANCELLED])):
            def fail(error=error):
                raise error
            thread = threading.Thread(target=fail, name=name)
            thread.start()
            thread.join()
    finally:
        threading.excepthook = previous
    assert [(name, error.code()) for name, error in seen] == [
        (DATA_PLANE_THREAD, grpc.StatusCode.UNAVAILABLE),
        (STATE_THREAD, grpc.StatusCode.UNAVAILABLE),
        ("another_thread", grpc.StatusCode.CANCELLED)]


def test_the_names_matched_are_beams():
    """The filter matches Beam's logger, message and thread names: when Beam renames
    one, this fails rather than the console filling up again."""
    import inspect

    from apache_beam.runners.worker import data_plane, sdk_worker

    from beam_pipeline.quiet import STREAM_READER_THREADS

    assert data_plane._LOGGER.name == DATA_PLANE_LOGGER  # pylint: disable=protected-access
    assert repr(DATA_PLANE_FAILURE) in inspect.getsource(data_plane)
    sources = inspect.getsource(data_plane) + inspect.getsource(sdk_worker)
    assert (DATA_PLANE_THREAD, STATE_THREAD) == STREAM_READER_THREADS
    for name in STREAM_READER_THREADS:
        assert f"name={name!r}" in sources, name

"""The download path itself: one worker thread, watched from the loop. Cancellation, stalls, the
overall deadline, memory under a compression bomb, and the same guarantees over TLS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from cte1_mcp.cte1.audio_data import AudioDataEndpoint
from cte1_mcp.errors import (
    AudioTooLarge,
    DownloadTimedOut,
    UpstreamTlsError,
    UpstreamTruncated,
    UpstreamUnavailable,
)
from cte1_mcp.models import CallKey
from cte1_mcp.settings import Settings
from cte1_mcp.simulator import DOC_TENANT, Fault, RunningSimulator
from cte1_mcp.units import MiB
from tests.helpers.raw_upstream import (
    KEY,
    TRICKY_AUDIO,
    RawServer,
    Sink,
    audio_part,
    expected_recording,
    failed,
    fetch,
    fetch_from,
    make_settings,
    metadata_part,
    multipart_body,
    multipart_reply,
    raw_server,
    simulator_settings,
)
from tests.helpers.tls_simulator import TestCa, tls_simulator

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = CallKey(DOC_TENANT, 942125, 1)
#: Generous bounds that only a hang reaches (the read timeout below is far longer).
HANG_GUARD_SECONDS = 10
LONG_READ_TIMEOUT = 60


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with raw_server() as raw:
        yield raw


def stalled_body() -> tuple[bytes, int]:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO * 64))
    return body, len(body) // 2


async def fetch_cancelled_after_progress(settings: Settings, key: CallKey) -> Sink:
    """Start a fetch, cancel it once bytes have arrived (within the hang guard); its sink."""
    sink = Sink()
    arrived = anyio.Event()

    async def progress(received: int, total: int | None) -> None:
        arrived.set()

    async with AudioDataEndpoint(settings) as endpoint:
        with anyio.fail_after(HANG_GUARD_SECONDS):
            async with anyio.create_task_group() as group:

                async def run() -> None:
                    await endpoint.fetch(key, sink, on_progress=progress)

                group.start_soon(run)
                await arrived.wait()
                group.cancel_scope.cancel()
    return sink


# --- cancellation and stalls -----------------------------------------------------------------------


async def test_cancelling_a_stalled_download_returns_at_once_and_nothing_writes_after(
    server: RawServer, tmp_path: Path
) -> None:
    """The upstream sends half the body and then nothing, connection open: the read would block for
    the read timeout (60 s); the loop shuts the socket down instead."""
    body, half = stalled_body()
    server.reply(multipart_reply(body, cut_after=half, stall=True))
    settings = make_settings(server.url, tmp_path, timeout_seconds=LONG_READ_TIMEOUT)
    sink = await fetch_cancelled_after_progress(settings, KEY)
    written = len(sink.data)
    await asyncio.wait_for(server.served[0].done.wait(), HANG_GUARD_SECONDS)
    assert server.served[0].client_gone  # the connection really went away
    await anyio.sleep(0.3)
    assert len(sink.data) == written  # the thread had ended: nothing wrote after the return


async def test_a_native_asyncio_cancel_still_waits_for_the_thread_and_stops_it(
    server: RawServer, tmp_path: Path
) -> None:
    """``Task.cancel()`` (``asyncio.wait_for``, shutdown) breaks anyio's shielded thread wait; the
    fetch must still not return while its thread runs, and must stop that thread's stalled read."""
    body, half = stalled_body()
    server.reply(multipart_reply(body, cut_after=half, stall=True))
    writing, release = threading.Event(), threading.Event()

    class Held(Sink):
        def write_blocking(self, chunk: bytes) -> None:
            writing.set()
            release.wait(HANG_GUARD_SECONDS)
            super().write_blocking(chunk)

    sink = Held()
    settings = make_settings(server.url, tmp_path, timeout_seconds=LONG_READ_TIMEOUT)
    async with AudioDataEndpoint(settings) as endpoint:
        task = asyncio.ensure_future(endpoint.fetch(KEY, sink))
        await anyio.to_thread.run_sync(writing.wait, HANG_GUARD_SECONDS)
        task.cancel()
        await anyio.sleep(0.2)
        assert not task.done()  # its thread is inside the sink: the fetch waits for it
        release.set()
        with anyio.fail_after(HANG_GUARD_SECONDS), pytest.raises(asyncio.CancelledError):
            await task  # the thread's next read returns at once: the socket was shut down
    written = len(sink.data)
    await asyncio.wait_for(server.served[0].done.wait(), HANG_GUARD_SECONDS)
    assert server.served[0].client_gone
    assert len(sink.data) == written


async def test_a_stalled_upstream_is_abandoned_at_the_download_deadline(
    server: RawServer, tmp_path: Path
) -> None:
    body, half = stalled_body()
    server.reply(multipart_reply(body, cut_after=half, stall=True))
    with anyio.fail_after(HANG_GUARD_SECONDS):
        run = await fetch(server, tmp_path, timeout_seconds=LONG_READ_TIMEOUT, download_timeout_seconds=0.5)
    exc = failed(run, DownloadTimedOut, "upstream_unavailable")
    assert exc.retryable is False
    assert "CTE1_DOWNLOAD_TIMEOUT_SECONDS" in exc.message and "nothing was stored" in exc.message
    assert "CTE1_DOWNLOAD_TIMEOUT_SECONDS" in exc.next_step


async def test_a_dripping_upstream_is_abandoned_at_the_download_deadline(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    """One byte every 50 ms: no read ever times out, yet the body would take days."""
    simulator.state.fail_next(Fault(drip_interval=0.05))
    settings = simulator_settings(simulator, tmp_path, download_timeout_seconds=1.0)
    with anyio.fail_after(HANG_GUARD_SECONDS):
        run = await fetch_from(settings, SAMPLE)
    exc = failed(run, DownloadTimedOut, "upstream_unavailable")
    assert "after 1 s" in exc.message
    assert "[upstream_unavailable]" in exc.render()
    [request] = simulator.state.requests
    assert not request.completed
    assert request.bytes_sent < 1000  # one byte per 50 ms: far from the whole body


async def test_a_failing_progress_callback_stops_the_download_and_propagates(
    server: RawServer, tmp_path: Path
) -> None:
    body, half = stalled_body()
    server.reply(multipart_reply(body, cut_after=half, stall=True))

    async def progress(received: int, total: int | None) -> None:
        raise RuntimeError("the client went away")

    settings = make_settings(server.url, tmp_path, timeout_seconds=LONG_READ_TIMEOUT)
    async with AudioDataEndpoint(settings) as endpoint:
        with anyio.fail_after(HANG_GUARD_SECONDS), pytest.raises(RuntimeError, match="went away"):
            await endpoint.fetch(KEY, Sink(), on_progress=progress)


async def test_a_failing_sink_propagates_unchanged(server: RawServer, tmp_path: Path) -> None:
    class Full(Sink):
        def write_blocking(self, chunk: bytes) -> None:
            raise OSError(28, "No space left on device")

    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))))
    async with AudioDataEndpoint(make_settings(server.url, tmp_path)) as endpoint:
        with pytest.raises(OSError, match="No space left"):
            await endpoint.fetch(KEY, Full())


def gzip_bomb(mib: int) -> bytes:
    """A valid multipart body of ``mib`` MiB of zeros as audio, gzip-compressed piece by piece."""
    head, tail = multipart_body(metadata_part(), audio_part(b"\x00")).split(b"\x00", 1)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    zeros = bytes(MiB)
    out = [packer.compress(head)]
    out += [packer.compress(zeros) for _ in range(mib)]
    out += [packer.compress(tail), packer.flush()]
    return b"".join(out)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops further SYNs, so a connect hangs."""
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued.connect(("127.0.0.1", port))  # fills the queue of one; nobody accepts
        yield port


async def test_a_connect_that_hangs_times_out(unanswered_port: int, tmp_path: Path) -> None:
    settings = make_settings(f"http://127.0.0.1:{unanswered_port}", tmp_path, timeout_seconds=0.3)
    with anyio.fail_after(HANG_GUARD_SECONDS):
        run = await fetch_from(settings)
    exc = failed(run, UpstreamUnavailable, "upstream_unavailable")
    assert exc.message == "CT-e1 did not answer in time (connect timeout, 0.3 s)."
    assert exc.retryable is True


async def test_a_hanging_connect_is_cancelled_at_once(unanswered_port: int, tmp_path: Path) -> None:
    settings = make_settings(
        f"http://127.0.0.1:{unanswered_port}", tmp_path, timeout_seconds=LONG_READ_TIMEOUT
    )
    async with AudioDataEndpoint(settings) as endpoint:
        with anyio.fail_after(HANG_GUARD_SECONDS), anyio.move_on_after(0.3) as scope:
            await endpoint.fetch(KEY, Sink())
    assert scope.cancelled_caught


async def test_a_hanging_connect_meets_the_download_deadline(unanswered_port: int, tmp_path: Path) -> None:
    settings = make_settings(
        f"http://127.0.0.1:{unanswered_port}",
        tmp_path,
        timeout_seconds=LONG_READ_TIMEOUT,
        download_timeout_seconds=0.5,
    )
    with anyio.fail_after(HANG_GUARD_SECONDS):
        run = await fetch_from(settings)
    failed(run, DownloadTimedOut, "upstream_unavailable")


# --- memory ------------------------------------------------------------------------------------------


async def test_a_gzip_bomb_does_not_raise_peak_rss(server: RawServer) -> None:
    """A few hundred KB of gzip that would expand to 256 MiB: never decoded, so the peak RSS stays put."""
    bomb = gzip_bomb(256)
    reply = multipart_reply(bomb, chunks=[64 * 1024])
    reply.headers = [*reply.headers, ("Content-Encoding", "gzip")]
    server.reply(reply)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.helpers.fetch_rss",
        server.url,
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    outcome = json.loads(stdout)
    assert outcome["code"] == "upstream_bad_response"
    assert outcome["written"] == 0
    assert outcome["peak"] - outcome["baseline"] < 8 * MiB


class Pausing(Sink):
    """Pauses the worker thread at its first write, so the upstream fills the socket buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write_blocking(self, chunk: bytes) -> None:
        if not self.sizes:
            time.sleep(0.5)
        self.sizes.append(len(chunk))
        super().write_blocking(chunk)


async def test_reads_are_larger_than_httpcores_64_kib(simulator: RunningSimulator, tmp_path: Path) -> None:
    sink = Pausing()
    async with AudioDataEndpoint(simulator_settings(simulator, tmp_path)) as endpoint:
        fetched = await endpoint.fetch(SAMPLE, sink)
    assert (hashlib.sha256(sink.data).hexdigest(), fetched.audio_bytes) == expected_recording(SAMPLE)
    assert max(sink.sizes) > 64 * 1024


# --- over TLS, trusting a test CA through CTE1_CA_BUNDLE ------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls(certificates: TestCa) -> Iterator[RunningSimulator]:
    with tls_simulator(certificates, chunk_size=256 * 1024) as running:
        yield running


@pytest.fixture
def https(tls: RunningSimulator) -> RunningSimulator:
    tls.state.reset()
    return tls


async def test_over_tls_the_recording_arrives_byte_exact(
    https: RunningSimulator, certificates: TestCa, tmp_path: Path
) -> None:
    run = await fetch_from(simulator_settings(https, tmp_path, ca_bundle=certificates.ca_bundle), SAMPLE)
    assert run.error is None and run.result is not None, run.error
    assert (hashlib.sha256(run.sink.data).hexdigest(), len(run.sink.data)) == expected_recording(SAMPLE)
    assert run.result.metadata.sessionId == 942125


async def test_over_tls_the_body_is_read_straight_past_h11(
    https: RunningSimulator, certificates: TestCa, tmp_path: Path, straight_reads: list[int]
) -> None:
    run = await fetch_from(simulator_settings(https, tmp_path, ca_bundle=certificates.ca_bundle), SAMPLE)
    assert run.error is None and run.result is not None, run.error
    assert (hashlib.sha256(run.sink.data).hexdigest(), len(run.sink.data)) == expected_recording(SAMPLE)
    assert len(straight_reads) == 1 and straight_reads[0] > len(run.sink.data)  # the whole multipart body


async def test_over_tls_records_already_received_are_gathered_into_one_read(
    https: RunningSimulator, certificates: TestCa, tmp_path: Path
) -> None:
    """The first write pauses the worker thread while the simulator fills the socket buffers;
    the next reads then hand over many 16 KiB records at once, not one each."""

    sink = Pausing()
    settings = simulator_settings(https, tmp_path, ca_bundle=certificates.ca_bundle)
    async with AudioDataEndpoint(settings) as endpoint:
        fetched = await endpoint.fetch(SAMPLE, sink)
    assert (hashlib.sha256(sink.data).hexdigest(), fetched.audio_bytes) == expected_recording(SAMPLE)
    assert max(sink.sizes) >= 4 * 16 * 1024


async def test_over_tls_without_the_ca_bundle_the_certificate_is_refused(
    https: RunningSimulator, tmp_path: Path
) -> None:
    run = await fetch_from(simulator_settings(https, tmp_path), SAMPLE)
    exc = failed(run, UpstreamTlsError, "upstream_tls_error")
    assert "CERTIFICATE_VERIFY_FAILED" in exc.message
    assert exc.retryable is False
    assert "CTE1_CA_BUNDLE" in exc.next_step
    assert https.state.requests == []


async def test_over_tls_a_truncated_answer_is_a_truncation(
    https: RunningSimulator, certificates: TestCa, tmp_path: Path
) -> None:
    https.state.fail_next(Fault(truncate_after=100_000))
    run = await fetch_from(simulator_settings(https, tmp_path, ca_bundle=certificates.ca_bundle), SAMPLE)
    exc = failed(run, UpstreamTruncated, "upstream_bad_response")
    assert exc.retryable is True
    assert "broke off after 100,000 of" in exc.message


async def test_over_tls_the_size_limit_holds(
    https: RunningSimulator, certificates: TestCa, tmp_path: Path
) -> None:
    settings = simulator_settings(https, tmp_path, ca_bundle=certificates.ca_bundle, max_audio_bytes=100_000)
    run = await fetch_from(settings, SAMPLE)
    failed(run, AudioTooLarge, "audio_too_large")
    assert len(run.sink.data) <= 100_000


async def test_over_tls_a_stalled_download_is_cancelled_at_once(
    https: RunningSimulator, certificates: TestCa, tmp_path: Path
) -> None:
    https.state.fail_next(Fault(stall_after=300_000))
    settings = simulator_settings(
        https, tmp_path, ca_bundle=certificates.ca_bundle, timeout_seconds=LONG_READ_TIMEOUT
    )
    sink = await fetch_cancelled_after_progress(settings, SAMPLE)
    written = len(sink.data)
    await anyio.sleep(0.3)
    assert len(sink.data) == written
    [request] = https.state.requests
    assert not request.completed


async def test_over_tls_a_dripping_upstream_meets_the_deadline(
    https: RunningSimulator, certificates: TestCa, tmp_path: Path
) -> None:
    https.state.fail_next(Fault(drip_interval=0.05))
    settings = simulator_settings(
        https, tmp_path, ca_bundle=certificates.ca_bundle, download_timeout_seconds=1.0
    )
    with anyio.fail_after(HANG_GUARD_SECONDS):
        run = await fetch_from(settings, SAMPLE)
    failed(run, DownloadTimedOut, "upstream_unavailable")


async def test_a_ca_bundle_gone_after_start_up_is_a_tls_error(
    https: RunningSimulator, certificates: TestCa, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(certificates.ca_bundle.read_bytes())
    settings = simulator_settings(https, tmp_path, ca_bundle=bundle)  # checked here: it loads
    bundle.unlink()
    run = await fetch_from(settings, SAMPLE)
    exc = failed(run, UpstreamTlsError, "upstream_tls_error")
    assert "CTE1_CA_BUNDLE" in exc.message

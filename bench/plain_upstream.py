"""A second, independent upstream: the CT-e1 audio_data answer from the standard library's
``http.server``, as a plain server would send it. Nothing of the simulator's stack (uvicorn,
Starlette, its WAV synthesis) is shared, so a cost that only shows against a fast, simple sender is
not hidden by the simulator's own pace.

``python -m bench.plain_upstream --port P [--certfile server.pem]``: tenant
:data:`~bench.simproc.BENCHMARK_TENANT`, session N is a finished 2-channel 16-bit WAV of exactly
N MiB; every record id from 1 up is the same recording (distinct keys for several cold calls in
one session). The body (metadata part, audio part) is built once per size, kept in memory, and
written with a ``Content-Length`` in :data:`WRITE_BYTES` ``write()`` calls: the sender does
nothing per chunk but hand the bytes to the kernel. With ``--audio FILE`` every call is that
recording instead (the transcription part serves a corpus call this way). :func:`plain_upstream_process` runs it over
HTTP or, given a certificate (``bench.tls_simulator.test_ca``), over HTTPS.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import ssl
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from bench.mcpstdio import Upstream
from bench.procs import ROOT, VENV_BIN, clean_env, free_port, stop, wait_for_port
from bench.simproc import BENCHMARK_TENANT, defaults

#: Bytes per ``write()`` of the body.
WRITE_BYTES = 1 << 20
#: Largest recording it serves (its body is held in memory).
MAX_MIB = 1024
#: ``--audio``: the recording served for every call instead of the sized noise.
AUDIO_FILE: Path | None = None
#: 8 kHz, 2 channels, 16-bit PCM: a telephone recording with one channel per party.
RATE, CHANNELS, SAMPLE_BYTES = 8000, 2, 2


def wav(size: int) -> bytes:
    """A WAV file of exactly ``size`` bytes: a 44-byte PCM header, then seeded noise."""
    data_size = size - 44
    header = b"RIFF" + struct.pack("<I", size - 8) + b"WAVE"
    header += b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, CHANNELS, RATE, RATE * CHANNELS * SAMPLE_BYTES, CHANNELS * SAMPLE_BYTES, 16
    )
    header += b"data" + struct.pack("<I", data_size)
    period = random.Random(size).randbytes(WRITE_BYTES)
    repeats, rest = divmod(data_size, len(period))
    return header + period * repeats + period[:rest]


def metadata(session_id: int, record_id: int, size: int) -> dict[str, object]:
    """Part 1, as the documentation's example has it: a finished call that ended an hour ago."""
    seconds = (size - 44) / (RATE * CHANNELS * SAMPLE_BYTES)
    end = datetime.now(UTC) - timedelta(hours=1)
    start = end - timedelta(seconds=seconds)

    def iso(moment: datetime) -> str:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return {
        "status": "complete",
        "tenantId": BENCHMARK_TENANT,
        "sessionId": session_id,
        "recordId": record_id,
        "direction": 0,
        "ani": "0399990000",
        "dnis": BENCHMARK_TENANT,
        "agentId": "B00000001",
        "agentName": "plain",
        "skillName": "plain",
        "groupId": f"{BENCHMARK_TENANT}@0399990000",
        "groupName": "plain",
        "connectTime": iso(start),
        "disconnectTime": iso(end),
    }


@cache
def audio(mib: int) -> bytes:
    """The recording of session ``mib`` (built once; a few hundred ms for 256 MiB)."""
    return AUDIO_FILE.read_bytes() if AUDIO_FILE is not None else wav(mib << 20)


def body(session_id: int, record_id: int) -> tuple[str, list[bytes]]:
    """The multipart answer: its boundary, and its body as prefix, audio, suffix (not joined:
    the audio is written from the cached bytes, never copied)."""
    boundary = "plain-" + secrets.token_hex(12)
    recording = audio(session_id)
    part1 = json.dumps(metadata(session_id, record_id, len(recording)), ensure_ascii=False).encode()
    prefix = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n'
        "Content-Type: application/json; charset=utf-8\r\n\r\n".encode()
        + part1
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="audioFile"; '
        f'filename="{session_id}_{record_id}.wav"\r\nContent-Type: audio/wav\r\n\r\n'.encode()
    )
    return boundary, [prefix, recording, f"\r\n--{boundary}--\r\n".encode()]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api_key = ""
    path_expected = ""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = self.rfile.read(length)
        if self.path != self.path_expected:
            self._json(HTTPStatus.NOT_FOUND, {"status": "error", "description": "not found"})
            return
        if self.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._json(HTTPStatus.UNAUTHORIZED, {"status": "error", "description": "unauthorized"})
            return
        try:
            asked = json.loads(request)
            tenant, session, record = asked["tenantId"], int(asked["sessionId"]), int(asked["recordId"])
        except (ValueError, KeyError, TypeError):
            self._json(HTTPStatus.OK, {"status": "error", "description": "invalid parameter"})
            return
        if tenant != BENCHMARK_TENANT or not 1 <= session <= MAX_MIB or record < 1:
            self._json(HTTPStatus.OK, {"status": "error", "description": "no such call"})
            return
        boundary, pieces = body(session, record)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        self.send_header("Content-Length", str(sum(map(len, pieces))))
        self.send_header("Connection", "close")
        self.end_headers()
        # One write() per WRITE_BYTES of the body (the first also carries the small prefix).
        whole = memoryview(pieces[0] + pieces[1][: WRITE_BYTES - len(pieces[0])])
        self.wfile.write(whole)
        with memoryview(pieces[1]) as recording:
            for start in range(WRITE_BYTES - len(pieces[0]), len(recording), WRITE_BYTES):
                self.wfile.write(recording[start : start + WRITE_BYTES])
        self.wfile.write(pieces[2])
        self.close_connection = True

    def _json(self, status: HTTPStatus, answer: dict[str, str]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        return None  # one line per request on stderr would be noise in the benchmark's log


@contextmanager
def plain_upstream_process(
    log: TextIO, certfile: Path | None = None, audio_file: Path | None = None
) -> Iterator[Upstream]:
    """This module's server on 127.0.0.1:<free port>, over HTTPS when given a certificate; serving
    ``audio_file`` for every call when given one."""
    port = free_port()
    command = [str(VENV_BIN / "python"), "-m", "bench.plain_upstream", "--port", str(port)]
    if certfile is not None:
        command += ["--certfile", str(certfile)]
    if audio_file is not None:
        command += ["--audio", str(audio_file.resolve())]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=ROOT)
    try:
        wait_for_port(port, process)
        api_key, source_uuid = defaults()
        scheme = "https" if certfile is not None else "http"
        yield Upstream(f"{scheme}://127.0.0.1:{port}", api_key, source_uuid)
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", type=Path, help="key and certificate (PEM): serve HTTPS")
    parser.add_argument("--audio", type=Path, help="serve this recording for every call")
    args = parser.parse_args()
    global AUDIO_FILE
    AUDIO_FILE = args.audio
    api_key, source_uuid = defaults()
    Handler.api_key = api_key
    Handler.path_expected = f"/general/v1/{source_uuid}/call/audio_data"
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.certfile is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

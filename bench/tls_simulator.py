"""The CT-e1 simulator behind TLS, as its own process: ``python -m bench.tls_simulator --port P
--certfile server.pem`` (``server.pem``: a key and a certificate for 127.0.0.1, issued by a test CA
made at run time with trustme; :func:`tls_simulator_process` hands the CA to the caller to trust)."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import trustme

from bench.mcpstdio import Upstream
from bench.procs import ROOT, VENV_BIN, clean_env, free_port, stop, wait_for_port
from bench.simproc import defaults


@contextmanager
def test_ca() -> Iterator[tuple[Path, Path]]:
    """A test CA made now, and a key and certificate for 127.0.0.1 it issued: (ca.pem, server.pem)."""
    with tempfile.TemporaryDirectory(prefix="cte1-bench-tls-") as directory:
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1")
        ca_pem, server_pem = Path(directory) / "ca.pem", Path(directory) / "server.pem"
        ca.cert_pem.write_to_path(str(ca_pem))
        issued.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        yield ca_pem, server_pem


@contextmanager
def tls_simulator_process(log: TextIO) -> Iterator[tuple[Upstream, Path]]:
    """A simulator serving HTTPS on 127.0.0.1:<free port>; yields where it is and the CA to trust."""
    with test_ca() as (ca_pem, server_pem):
        port = free_port()
        command = [
            str(VENV_BIN / "python"),
            "-m",
            "bench.tls_simulator",
            "--port",
            str(port),
            "--certfile",
            str(server_pem),
        ]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=ROOT)
        try:
            wait_for_port(port, process)
            api_key, source_uuid = defaults()
            yield Upstream(f"https://127.0.0.1:{port}", api_key, source_uuid), ca_pem
        finally:
            stop(process)


def main() -> None:
    from cte1_mcp.simulator import SimulatorConfig, serve

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", type=Path, required=True)
    args = parser.parse_args()
    serve(SimulatorConfig(host="127.0.0.1", port=args.port, min_interval=0.0), tls_pem=args.certfile)


if __name__ == "__main__":
    main()

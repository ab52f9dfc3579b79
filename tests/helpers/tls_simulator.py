"""The CT-e1 simulator behind TLS on 127.0.0.1, with a test CA made at run time (trustme)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from cte1_mcp.simulator import RunningSimulator, SimulatorConfig, run_in_thread


@dataclass(frozen=True, slots=True)
class TestCa:
    """A CA trusted by nobody but the test, and a server certificate for 127.0.0.1 it issued."""

    __test__ = False  # not a test class, whatever its name

    ca_bundle: Path
    server_pem: Path  # the server's private key and certificate chain

    @classmethod
    def create(cls, directory: Path) -> TestCa:
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        bundle, server = directory / "test-ca.pem", directory / "server.pem"
        ca.cert_pem.write_to_path(str(bundle))
        issued.private_key_and_cert_chain_pem.write_to_path(str(server))
        return cls(bundle, server)


@contextmanager
def tls_simulator(certificates: TestCa, **overrides: Any) -> Iterator[RunningSimulator]:
    """A simulator serving HTTPS from a daemon thread on a free port, stopped on exit."""
    config = SimulatorConfig(**{"host": "127.0.0.1", "port": 0, "min_interval": 0.0, **overrides})
    with run_in_thread(config, tls_pem=certificates.server_pem) as running:
        yield running

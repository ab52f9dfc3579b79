"""An embedded CT-e1 General API (音声データ取得API) for the demo, the integration tests and benchmarks.

Faithful to the documented behaviour and independent of the project's client code: a simulator
that reused the client's parser would test nothing.
"""

from cte1_mcp.simulator.app import create_app
from cte1_mcp.simulator.calls import (
    BENCHMARK_MAX_MIB,
    BENCHMARK_TENANT,
    DEFAULT_ALLOWED_TENANTS,
    DOC_METADATA_TENANT,
    DOC_TENANT,
    FOREIGN_TENANT,
    OTHER_TENANT,
    SAMPLE_CALLS,
    SampleCall,
    benchmark_call,
    find_call,
)
from cte1_mcp.simulator.config import (
    DEFAULT_API_KEY,
    DEFAULT_API_VERSION,
    DEFAULT_HOST,
    DEFAULT_MIN_INTERVAL,
    DEFAULT_PORT,
    DEFAULT_SOURCE_UUID,
    SimulatorConfig,
)
from cte1_mcp.simulator.server import RunningSimulator, run_in_thread, serve
from cte1_mcp.simulator.state import Fault, RequestRecord, SimulatorState

__all__ = [
    "BENCHMARK_MAX_MIB",
    "BENCHMARK_TENANT",
    "DEFAULT_ALLOWED_TENANTS",
    "DEFAULT_API_KEY",
    "DEFAULT_API_VERSION",
    "DEFAULT_HOST",
    "DEFAULT_MIN_INTERVAL",
    "DEFAULT_PORT",
    "DEFAULT_SOURCE_UUID",
    "DOC_METADATA_TENANT",
    "DOC_TENANT",
    "FOREIGN_TENANT",
    "OTHER_TENANT",
    "SAMPLE_CALLS",
    "Fault",
    "RequestRecord",
    "RunningSimulator",
    "SampleCall",
    "SimulatorConfig",
    "SimulatorState",
    "benchmark_call",
    "create_app",
    "find_call",
    "run_in_thread",
    "serve",
]

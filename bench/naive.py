"""What a user would write without cte1-mcp: read the whole response, split it, write the audio.

Run as a subprocess (``python -m bench.naive ...``) so its peak RSS is its own; prints one JSON
line: the seconds from sending the request to the file being written, the CPU seconds of that
(this process, all threads), the audio size, and the peak RSS before the request (imports only) and after.
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
from pathlib import Path

import httpx
from requests_toolbelt.multipart.decoder import MultipartDecoder


def vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmHWM")


def fetch(url: str, api_key: str, body: dict[str, object], out: Path, ca_bundle: Path | None = None) -> int:
    """The obvious code: httpx.post, MultipartDecoder over the bytes, write the non-JSON part."""
    response = httpx.post(
        url,
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=httpx.Timeout(300.0),
        verify=ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True,
    )
    response.raise_for_status()
    decoder = MultipartDecoder(response.content, response.headers["content-type"])
    audio = next(
        part.content
        for part in decoder.parts
        if not part.headers.get(b"content-type", b"").startswith(b"application/json")
    )
    out.write_bytes(audio)
    return len(audio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--session", type=int, required=True)
    parser.add_argument("--record", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ca-bundle", type=Path, help="PEM CA file to trust (an https:// URL)")
    args = parser.parse_args()
    body: dict[str, object] = {"tenantId": args.tenant, "sessionId": args.session, "recordId": args.record}
    baseline = vm_hwm_bytes()
    start, cpu = time.perf_counter(), time.process_time()
    size = fetch(args.url, args.api_key, body, args.out, args.ca_bundle)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = vm_hwm_bytes()
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu, "size": size, "baseline_hwm": baseline, "peak_hwm": peak}
        )
    )


if __name__ == "__main__":
    main()

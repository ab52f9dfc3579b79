"""Run in a child process: load a sherpa-onnx transducer and decode a second of silence.

sherpa-onnx ends the process (``_Exit``) on many bad models (a missing metadata key, a malformed
tokens.txt, a tensor of the wrong type) instead of raising, so a model is first tried here, where
that costs a child, not the server. Usage: ``python -m cte1_mcp.transcribe.engines.sherpa_onnx_probe
JSON`` with the recognizer's files and provider; prints one JSON line, ``{"ok": true}`` or
``{"error": "…"}``.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    config = json.loads(sys.argv[1])
    try:
        import numpy as np
        import sherpa_onnx

        recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
            encoder=config["encoder"],
            decoder=config["decoder"],
            joiner=config["joiner"],
            tokens=config["tokens"],
            num_threads=1,
            sample_rate=16_000,
            feature_dim=80,
            decoding_method="greedy_search",
            provider=config["provider"],
        )
        stream = recognizer.create_stream()
        stream.accept_waveform(16_000, np.zeros(16_000, dtype=np.float32))
        recognizer.decode_stream(stream)
    except Exception as error:  # the reason goes back to the parent, which words it for the user
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        return 1
    print(json.dumps({"ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

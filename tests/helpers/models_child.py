"""``python -m tests.helpers.models_child CATALOG_JSON ARGS...``: the real ``cte1-mcp`` command in a
fresh process, with one more catalog entry: a tiny model the fake hub serves, pinned to its real
hashes (the real catalog's models are hundreds of megabytes on a hub this machine cannot reach).

CATALOG_JSON: ``{"name", "engine", "repo", "revision", "files": [[name, size, sha256], ...]}``, and
optionally ``"also": [[origin, [[name, size, sha256], ...]], ...]``: other published forms.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from cte1_mcp.cli import main
from cte1_mcp.transcribe.catalog import CATALOG, CatalogEntry, FileSet, PinnedFile


def register(spec: dict[str, object]) -> None:
    files = tuple(PinnedFile(str(n), int(s), str(h)) for n, s, h in spec["files"])  # type: ignore[attr-defined]
    repo, revision = str(spec["repo"]), str(spec["revision"])
    CATALOG[str(spec["name"])] = CatalogEntry(
        name=str(spec["name"]),
        engine=str(spec["engine"]),
        description="a tiny test model",
        license="none",
        repo=repo,
        revision=revision,
        pull=FileSet(f"{repo}@{revision[:7]}", files),
        also=tuple(
            FileSet(str(origin), tuple(PinnedFile(str(n), int(s), str(h)) for n, s, h in form))
            for origin, form in spec.get("also", [])  # type: ignore[attr-defined]
        ),
    )


if __name__ == "__main__":
    # This child is a command typed in a terminal, where Ctrl-C (SIGINT) interrupts it. A test run
    # started in the background (`make test &`, a CI runner's shell without job control) hands its
    # children SIGINT ignored, and Python keeps an ignored SIGINT ignored: the Ctrl-C test then hangs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    register(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    main(args=sys.argv[2:], prog_name="cte1-mcp")

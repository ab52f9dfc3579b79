"""``python -m tests.helpers.models_child CATALOG_JSON ARGS...``: the real ``cte1-mcp`` command in a
fresh process, with one more catalog entry: a tiny model the fake hub serves, pinned to its real
hashes (the real catalog's models are hundreds of megabytes on a hub this machine cannot reach).

CATALOG_JSON: ``{"name", "engine", "repo", "revision", "files": [[name, size, sha256], ...]}``.
"""

from __future__ import annotations

import json
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
    )


if __name__ == "__main__":
    register(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    main(args=sys.argv[2:], prog_name="cte1-mcp")

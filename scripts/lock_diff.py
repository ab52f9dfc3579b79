"""Small helpers for the lock file, used by the Makefile.

``lock_diff.py LOCK FREEZE``: list the packages whose version in FREEZE (``uv pip list --format
freeze`` of the newest-versions venv) differs from LOCK, so ``make test-latest`` says what moved.

``lock_diff.py --extract NAME LOCK``: print NAME's entry of LOCK (its pin and hashes), as a
requirements file pip can install with ``--require-hashes``: the bootstrap installs uv this way,
at exactly the version and hashes the lock holds.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, set[str]]:
    """Package → versions pinned (a universal lock may pin two, one per Python marker)."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if match := _PIN.match(line):
            found.setdefault(_canonical(match[1]), set()).add(match[2])
    return found


def entry(text: str, name: str) -> str:
    """The lines of NAME's entry: its pin line and the indented hash lines after it."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        match = _PIN.match(line)
        if match and _canonical(match[1]) == _canonical(name):
            block = [line]
            for following in lines[start + 1 :]:
                if not following.startswith("    --hash="):
                    break
                block.append(following)
            block[-1] = block[-1].rstrip(" \\")
            return "\n".join(block) + "\n"
    raise SystemExit(f"{name} is not pinned in the lock")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--extract":
        name, lock = argv[1], Path(argv[2])
        sys.stdout.write(f"# {name} as pinned in {lock} (written by make lock; do not edit)\n")
        sys.stdout.write(entry(lock.read_text(), name))
        return 0
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    locked = pins(Path(argv[0]).read_text())
    latest = pins(Path(argv[1]).read_text())
    moved = [
        f"  {name}: lock {' / '.join(sorted(locked[name]))} → newest {version}"
        for name, versions in sorted(latest.items())
        for version in versions
        if name in locked and version not in locked[name]
    ]
    sys.stdout.write("\n".join(moved) + "\n" if moved else "  (none: the lock is the newest)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

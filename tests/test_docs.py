"""The README and docs/ are what a newcomer follows: their links, settings, commands must be real.

Links and anchors are checked with GitHub's own heading-slug rules, the settings against the
settings model itself (not a list written here), the `make` targets against the Makefile.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from cte1_mcp.errors import Cte1Error
from cte1_mcp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def markdown_files() -> list[Path]:
    files = [README, *sorted(DOCS.glob("*.md"))]
    bench = ROOT / "bench" / "README.md"
    return [*files, bench] if bench.exists() else files


FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
HTML_ID = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def prose(text: str) -> str:
    """The text with fenced blocks and code spans blanked: what GitHub renders as links/headings."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)


def code(text: str) -> Iterator[str]:
    """Every fenced block and code span: where a reader copies commands from."""
    for block in FENCE.finditer(text):
        yield block.group(0)
    for span in CODE_SPAN.finditer(FENCE.sub("", text)):
        yield span.group(2)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading (github-slugger): the rendered text, lowercased, every
    character but letters, digits, marks, '-', '_' and spaces dropped, spaces turned into '-'.
    Japanese text is letters, so it is kept."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").replace("*", "").lower()
    kept = "".join(ch for ch in text if ch in "-_ " or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found = set(HTML_ID.findall(text))
    for match in HEADING.finditer(FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_github_slug_follows_githubs_rules() -> None:
    assert github_slug("Quick start") == "quick-start"
    assert github_slug("Phone numbers (`CTE1_MASK_NUMBERS`)") == "phone-numbers-cte1_mask_numbers"
    assert github_slug("`get_call_metadata`") == "get_call_metadata"
    assert github_slug("Where tenantId, sessionId and recordId come from") == (
        "where-tenantid-sessionid-and-recordid-come-from"
    )
    assert github_slug("汎用API申込書 の項目") == "汎用api申込書-の項目"
    assert github_slug("Deployment: HTTP, replicas & Redis") == "deployment-http-replicas--redis"


def test_duplicate_headings_get_numbered_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Notes\n\n```\n# not a heading\n```\n\n## Notes\n")
    assert anchors(page) == {"notes", "notes-1", "notes-2"}


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def settings_names() -> list[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return [f"{prefix}{name}".upper() for name in Settings.model_fields]


def table_settings(text: str) -> set[str]:
    """The CTE1_* names in the first cell of a table row."""
    names: set[str] = set()
    for row in re.findall(r"^\|([^|\n]*)\|", text, re.MULTILINE):
        names.update(re.findall(r"`(CTE1_[A-Z0-9_]+)`", row))
    return names


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no '## {title}' section"
    return match.group(1)


def test_every_setting_is_in_the_readmes_configuration_table() -> None:
    names = settings_names()
    assert "CTE1_BASE_URL" in names and "CTE1_API_KEY_FILE" in names  # the derivation itself
    table = table_settings(section(README.read_text(encoding="utf-8"), "Configuration"))
    missing = [n for n in names if n not in table]
    assert not missing, f"settings missing from the README's configuration table: {missing}"


def test_every_setting_is_in_the_full_configuration_table() -> None:
    full = DOCS / "configuration.md"
    table = table_settings(full.read_text(encoding="utf-8"))
    missing = [n for n in settings_names() if n not in table]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_no_page_names_a_setting_that_does_not_exist() -> None:
    known = set(settings_names())
    for page in markdown_files():
        unknown = set(re.findall(r"\bCTE1_[A-Z0-9_]*[A-Z0-9]", page.read_text(encoding="utf-8"))) - known
        assert not unknown, f"{page.name} names settings the server does not read: {sorted(unknown)}"


def error_codes() -> set[str]:
    def walk(cls: type[Cte1Error]) -> Iterator[type[Cte1Error]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from walk(sub)

    return {cls.code for cls in walk(Cte1Error)}


def table_codes(text: str) -> set[str]:
    """The `code` names in the first cell of a table row."""
    codes: set[str] = set()
    for row in re.findall(r"^\|([^|\n]*)\|", text, re.MULTILINE):
        codes.update(re.findall(r"`([a-z_]+)`", row))
    return codes


def test_every_error_code_is_in_both_error_tables() -> None:
    codes = error_codes()
    assert {"internal_error", "invalid_parameter"} <= codes  # the derivation itself
    short = table_codes(section(README.read_text(encoding="utf-8"), "Errors"))
    full = table_codes((DOCS / "errors.md").read_text(encoding="utf-8"))
    assert not codes - short, f"error codes missing from the README's table: {sorted(codes - short)}"
    assert not codes - full, f"error codes missing from docs/errors.md: {sorted(codes - full)}"
    assert not (short | full) - codes, f"tables name codes the server lacks: {sorted((short | full) - codes)}"


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)[ \t]*:(?!=)", text, re.MULTILINE))


def test_every_make_target_the_docs_name_exists() -> None:
    targets = makefile_targets()
    assert {"setup", "test"} <= targets
    for page in markdown_files():
        named = {
            target
            for snippet in code(page.read_text(encoding="utf-8"))
            for target in re.findall(r"(?:^|[\s;&(])make[ \t]+([a-z][\w-]*)", snippet)
        }
        assert named <= targets, f"{page.name} names make targets the Makefile lacks: {named - targets}"


# A bare `python` is the system's, which has none of the dependencies: commands that run this
# checkout's code must use the environment `make` builds.
BARE_PYTHON = re.compile(
    r"(?<![\w/.$-])python3?\s+(?:examples/|scripts/|bench/|-m\s+(?:bench|cte1_mcp|pytest|mypy|ruff)\b)"
)


def test_commands_run_the_checkouts_python() -> None:
    for page in markdown_files():
        bare = [m.group(0) for s in code(page.read_text(encoding="utf-8")) for m in BARE_PYTHON.finditer(s)]
        assert not bare, f"{page.name} runs the checkout's code with a bare python: {bare}"


def test_usage_lines_of_examples_and_scripts_run_the_checkouts_python() -> None:
    for script in [*(ROOT / "examples").glob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        usage = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        bare = [m.group(0) for m in BARE_PYTHON.finditer(usage)]
        assert not bare, f"{script.name}'s usage runs it with a bare python: {bare}"


def test_every_doc_is_linked_from_the_readme() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in LINK.findall(prose(README.read_text(encoding="utf-8")))
    }
    assert DOCS.is_dir()
    orphans = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs the README does not link: {orphans}"


def test_docs_named_by_the_code_exist() -> None:
    # The Makefile and the sources point readers at docs/*.md; a renamed page must not leave them dangling.
    sources = [ROOT / "Makefile", *(ROOT / "server").rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    missing = {
        f"{source.relative_to(ROOT)}: {name}"
        for source in sources
        for name in re.findall(r"\bdocs/[\w-]+\.md", source.read_text(encoding="utf-8"))
        if not (ROOT / name).exists()
    }
    assert not missing, sorted(missing)

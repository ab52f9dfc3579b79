"""Configuration from ``CTE1_*`` environment variables; one error that lists every problem.

The API key is held as a ``SecretStr`` and never appears in a message, a log line or a repr.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from platformdirs import user_cache_dir, user_data_dir
from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cte1_mcp.errors import ConfigurationError
from cte1_mcp.models import is_tenant_id
from cte1_mcp.units import MiB

#: Where CT-e1's speech-recognition push is accepted unless CTE1_PUSH_PATH says otherwise.
DEFAULT_PUSH_PATH = "/cte1/speech-recognition"
_PUSH_PATH = re.compile(r"/[A-Za-z0-9._~/-]{1,200}")


def default_cache_dir() -> Path:
    return Path(user_cache_dir("cte1-mcp", appauthor=False))


def default_models_dir() -> Path:
    return Path(user_data_dir("cte1-mcp", appauthor=False)) / "models"


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the machine's)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


class AsrSettings(BaseSettings):
    """Transcription: which model, where models are installed, how it runs. Alone, what
    ``cte1-mcp models`` reads (it needs no CT-e1 settings)."""

    model_config = SettingsConfigDict(env_prefix="CTE1_", extra="ignore", frozen=True)

    # --- transcripts (issue 15) ---
    asr_models_dir: Path = Field(
        default_factory=default_models_dir,
        description="Where `cte1-mcp models` installs speech-recognition models (one folder each)",
    )
    asr_model: str | None = Field(
        None,
        min_length=1,
        description="The model get_call_transcript uses: a name installed in CTE1_ASR_MODELS_DIR, or a "
        "model directory; unset: get_call_transcript answers [transcription_unavailable]",
    )
    asr_device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="Where the model runs: cpu, cuda (an NVIDIA GPU), or auto (cuda when there is one)"
    )
    asr_compute_type: str | None = Field(
        None,
        pattern=r"^[a-z0-9_]{1,32}$",
        description="Numeric precision, e.g. int8, int8_float16, float16, float32; unset: the engine's "
        "default (Whisper models: int8 on CPU, the model's own on CUDA)",
    )
    asr_language: str = Field(
        "ja",
        pattern=r"^[a-z]{2,3}$",
        description="Language spoken in the calls (ISO 639 code of two or three letters, e.g. ja, en, yue)",
    )
    asr_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="CPU threads one transcription uses; unset: every core this process may use",
    )
    asr_concurrency: int = Field(
        1, ge=1, le=64, description="Transcriptions run at once by one server; others wait (it is CPU-bound)"
    )
    asr_timeout_seconds: float = Field(
        3600.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="Longest one transcription may take; then it is abandoned",
    )

    @field_validator("asr_models_dir", mode="before")
    @classmethod
    def _models_dir_not_empty(cls, value: Any) -> Any:
        return _path_not_empty(value)

    @field_validator("asr_device", mode="before")
    @classmethod
    def _device_trimmed(cls, value: Any) -> Any:
        return _trimmed(value)

    @property
    def asr_threads_count(self) -> int:
        return self.asr_threads or available_cores()


class Settings(AsrSettings):
    """Everything the server needs to reach CT-e1 and keep recordings safely."""

    model_config = SettingsConfigDict(env_prefix="CTE1_", extra="ignore", frozen=True)

    # --- CT-e1 access, the store, logging and HTTP access ---
    base_url: AnyHttpUrl = Field(description="https://<domain> given in the 汎用API申込書")
    api_version: str = Field(
        "v1", pattern=r"^[A-Za-z0-9._-]{1,32}$", description="The {apiVersion} path segment"
    )
    source_uuid: UUID = Field(description="アクセス元UUID assigned to this caller")
    api_key: SecretStr | None = Field(None, description="The General API secret key")
    api_key_file: Path | None = Field(
        None, validate_default=True, description="A file holding the key (first line)"
    )
    allowed_tenants: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Comma-separated tenant ids this server may read; empty means any"
    )
    min_interval_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="Start-to-start spacing of upstream requests (0 turns it off)",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="Where recordings are stored (a private directory)"
    )
    max_audio_bytes: int = Field(512 * MiB, ge=1, description="Largest recording accepted from CT-e1")
    timeout_seconds: float = Field(
        30.0, gt=0, le=3600, allow_inf_nan=False, description="Connect / per-read timeout towards CT-e1"
    )
    inline_audio_max_bytes: int = Field(
        512 * 1024,
        ge=0,
        description="Largest recording get_call_audio, or clip get_call_clip, returns inline",
    )
    resource_max_bytes: int = Field(
        64 * MiB, ge=1, description="Largest recording returned as a resource blob (one JSON-RPC message)"
    )
    retention_hours: float = Field(
        24.0,
        gt=0,
        le=31 * 24,
        allow_inf_nan=False,
        description="Hours a stored recording is kept after it was fetched (at most 744: 31 days)",
    )
    cache_max_bytes: int = Field(
        2048 * MiB, ge=1, description="Total size of the store; least recently used recordings go first"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Server log level (logs go to stderr; stdout belongs to MCP over stdio)"
    )
    http_token: SecretStr | None = Field(None, description="Bearer token MCP clients must send over HTTP")
    http_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Host header values accepted over HTTP besides loopback (DNS-rebinding protection)"
    )
    # --- stateless HTTP for replicas, and the audit trail ---
    http_stateless: bool = Field(
        False, description="Keep no per-session state over HTTP, so any replica can answer (like --stateless)"
    )
    audit_log: Path | None = Field(
        None,
        description="JSON-lines file with one line per tool call, resource read, download GET and pushed record "
        "(who fetched what)",
    )
    # --- what MCP clients are shown ---
    mask_numbers: bool = Field(
        False, description="Mask ani/dnis (all but the last four digits) in everything sent to MCP clients"
    )
    # --- coordination: the platform's limit shared across processes and machines ---
    redis_url: SecretStr | None = Field(
        None,
        description="redis://, rediss:// or unix:// URL of the Redis/Valkey that shares the rate limit "
        "and single-flight between machines; unset: processes sharing CTE1_CACHE_DIR coordinate through it",
    )
    # --- audio analytics and clips ---
    channel_roles: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated role of each channel of a two-channel recording, channel 0 first "
        "(e.g. customer,agent); unset: analytics label them 'channel 0' / 'channel 1' (roles are never guessed)",
    )
    clip_max_seconds: float = Field(
        600.0, gt=0, le=4 * 3600, allow_inf_nan=False, description="Longest clip get_call_clip cuts (seconds)"
    )
    # --- transcripts pushed by CT-e1 (音声認識結果一括送信API), accepted over HTTP only ---
    push_key: SecretStr | None = Field(
        None,
        description="Pre-shared key CT-e1 sends in Authorization when it pushes speech-recognition "
        "results; set (over HTTP) to accept pushes",
    )
    push_key_file: Path | None = Field(
        None, validate_default=True, description="A file holding the push key (first line)"
    )
    push_path: str = Field(
        DEFAULT_PUSH_PATH, description="The HTTP path CT-e1 pushes speech-recognition results to (POST)"
    )
    push_max_bytes: int = Field(
        4 * MiB,
        ge=1024,
        le=256 * MiB,
        description="Largest push body accepted (bytes); larger is refused (413)",
    )
    transcript_source: Literal["platform", "local"] = Field(
        "platform",
        description="platform: get_call_transcript serves CT-e1's pushed transcript when one was pushed, "
        "else transcribes locally; local: always transcribe locally",
    )

    @field_validator("api_key_file", "cache_dir", "audit_log", "push_key_file", "ca_bundle", mode="before")
    @classmethod
    def _paths_not_empty(cls, value: Any) -> Any:
        return _path_not_empty(value)

    @field_validator("log_level", "transcript_source", mode="before")
    @classmethod
    def _word_trimmed(cls, value: Any) -> Any:
        # "INFO " (a trailing space from a copied line or an env file) means INFO.
        return _trimmed(value)

    @field_validator("channel_roles")
    @classmethod
    def _two_distinct_roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return checked_roles(value)

    # --- CT-e1 client: waits, deadlines and trusted CAs ---
    max_retry_after_seconds: float = Field(
        600.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="Longest platform-requested wait (Retry-After) honoured; longer ones are cut to it",
    )
    download_timeout_seconds: float = Field(
        900.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="Deadline of one whole download (CTE1_TIMEOUT_SECONDS is per read)",
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of the CA certificates trusted for the CT-e1 connection (instead of the defaults)",
    )

    @field_validator("asr_model")
    @classmethod
    def _model_usable(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Checked at start-up (files, engine, its package, recorded checksums): a set-but-broken
        # model is a configuration problem; unset is not (the tool says transcription is unavailable).
        models_dir = info.data.get("asr_models_dir")
        if value is not None and models_dir is not None:
            # Imported only when a model is set: it brings the engines' seam (numpy) with it.
            from cte1_mcp.transcribe.configured import Unusable, resolve

            try:
                resolve(value, models_dir)
            except Unusable as exc:
                raise ValueError(_shown(str(exc))) from None
        return value

    @field_validator("base_url")
    @classmethod
    def _https_origin(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        """Both rules in one validator, so a URL breaking both reports both (a field stops at its
        first failing validator)."""
        problems = []
        # The one General API key would otherwise travel in clear text.
        if value.scheme != "https" and not is_loopback(value.host or ""):
            problems.append("must be https:// (plain http:// is allowed only for a loopback simulator)")
        # A path here would be doubled by the one the server builds and answer 404, which the
        # platform uses for "IP not allow-listed": the wrong cause would be reported.
        if value.username or value.password:
            # Never copied anywhere (`cte1-mcp config` prints the URL): CT-e1 takes the API key only.
            problems.append("must not hold a user name or password (CT-e1 authenticates with CTE1_API_KEY)")
        if (value.path or "/") != "/" or value.query or value.fragment:
            problems.append(
                "must be only https://<domain>[:port]: the path (/general/<version>/<sourceUuid>/...) "
                "is built by the server from CTE1_API_VERSION and CTE1_SOURCE_UUID"
            )
        if problems:
            raise ValueError("; and it ".join(problems))
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_loads(cls, value: Path | None) -> Path | None:
        # Checked at start-up: a bad bundle would otherwise fail every download with a TLS error.
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except FileNotFoundError:
                raise ValueError(f"{_shown(str(value))} does not exist") from None
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"{_shown(str(value))} is not a readable PEM file of CA certificates ({_shown(str(exc))})"
                ) from None
        return value

    @field_validator("push_path")
    @classmethod
    def _plain_push_path(cls, value: str) -> str:
        # A fixed, plain path: no pattern, query or dot segment a router or proxy could read otherwise.
        if (
            not _PUSH_PATH.fullmatch(value)
            or "//" in value
            or any(part in (".", "..") for part in value.split("/"))
        ):
            raise ValueError(
                "must be a plain absolute path such as /cte1/speech-recognition "
                "(letters, digits, '-', '_', '.', '~' and '/')"
            )
        if value.rstrip("/") == "/mcp" or value.startswith("/mcp/") or value == "/":
            raise ValueError("must not be / or /mcp (the MCP endpoint)")
        return value

    @field_validator("api_key", "http_token", "push_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty HTTP token would otherwise switch authentication off, an empty key send "Bearer ".
        # Checked and kept as it is used: without surrounding spaces or a "Bearer " prefix.
        if value is not None:
            problem = _secret_problem(value.get_secret_value())
            if problem:
                raise ValueError(problem)
            return SecretStr(bare_secret(value.get_secret_value()))
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked at start-up; the URL is a secret (it may hold a password) and is never echoed.
        if value is not None:
            scheme = value.get_secret_value().strip().partition("://")[0].lower()
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("allowed_tenants", "http_allowed_hosts", "channel_roles", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_tenants")
    @classmethod
    def _tenants_are_digits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in value if not is_tenant_id(t)]
        if bad:
            raise ValueError(f"tenant ids must be 1 to 32 digits (0-9); not: {_shown(', '.join(bad))}")
        return value

    @field_validator("api_key_file")
    @classmethod
    def _one_key_source(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # A field validator (not a model one) so a missing key is listed with every other problem.
        key = info.data.get("api_key")
        if key is not None and value is not None:
            raise ValueError("set CTE1_API_KEY or CTE1_API_KEY_FILE, not both")
        if key is None and value is None:
            if "api_key" in info.data:
                raise ValueError("CTE1_API_KEY or CTE1_API_KEY_FILE is required")
            return value  # CTE1_API_KEY was given but invalid: already reported
        if value is not None:
            problem = _secret_problem(_read_key_file(value))
            if problem:
                raise ValueError(f"the key in it {problem}")
        return value

    @field_validator("push_key_file")
    @classmethod
    def _one_push_key_source(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Optional (no key: no push route), but never two sources, and never an empty key.
        if value is None:
            return value
        if info.data.get("push_key") is not None:
            raise ValueError("set CTE1_PUSH_KEY or CTE1_PUSH_KEY_FILE, not both")
        problem = _secret_problem(_read_key_file(value))
        if problem:
            raise ValueError(f"the key in it {problem}")
        return value

    @model_validator(mode="after")
    def _load_key_file(self) -> Settings:
        if self.api_key_file is not None:
            object.__setattr__(self, "api_key", SecretStr(bare_secret(_read_key_file(self.api_key_file))))
        if self.push_key_file is not None:
            key = bare_secret(_read_key_file(self.push_key_file))
            object.__setattr__(self, "push_key", SecretStr(key))
        return self

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value: ``Bearer <key>`` (a key given as ``Bearer <key>`` is
        held without its prefix)."""
        assert self.api_key is not None  # guaranteed by _one_key_source
        return f"Bearer {bare_secret(self.api_key.get_secret_value())}"

    @property
    def audio_data_url(self) -> str:
        return (
            f"{str(self.base_url).rstrip('/')}/general/{self.api_version}/{self.source_uuid}/call/audio_data"
        )


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: where plain HTTP never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: What an HTTP header value may hold (RFC 9110 field-value, ASCII only): printable characters,
#: with single spaces or tabs between them. A key outside it could not be sent (or would be
#: echoed by the HTTP library in its error), so it is refused at start-up.
HEADER_VALUE = re.compile(r"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*")


#: A leading authentication scheme: a key may be given as ``Bearer <key>``, as it is sent.
_BEARER = re.compile(r"^bearer(?:\s+|$)", re.IGNORECASE)


def bare_secret(secret: str) -> str:
    """A key or token as it is used: without surrounding spaces (a file's or a Kubernetes secret's
    trailing newline) or a leading ``Bearer `` (so ``"Bearer "`` alone is empty)."""
    return _BEARER.sub("", secret.strip(), count=1).strip()


def _secret_problem(secret: str) -> str | None:
    """Why a key or token is unusable, in words that never quote it; None when it is fine."""
    stripped = bare_secret(secret)
    if not stripped:
        return "is empty"
    if not HEADER_VALUE.fullmatch(stripped):
        return "holds characters an HTTP header cannot carry (a line break, a control or non-ASCII character)"
    return None


def _read_key_file(path: Path) -> str:
    """The first line (the message names no variable: the caller's field does)."""
    try:
        # utf-8-sig: a byte-order mark (some Windows editors write one) is not part of the key.
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    return lines[0].strip() if lines else ""


def _shown(text: str) -> str:
    """``text`` fit for a message: bytes that are not UTF-8 (they arrive as lone surrogates from the
    environment) escaped as ``\\udcff``; left in, they would make the message itself fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _trimmed(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _path_not_empty(value: Any) -> Any:
    # An empty path would be the current directory (Path("") is "."): never what was meant.
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: give a path, or unset the variable for the default")
    return value


def checked_roles(value: tuple[str, ...]) -> tuple[str, ...]:
    """``CTE1_CHANNEL_ROLES`` (and ``asr eval --roles``) as used: none, or two different names,
    CT-e1's two roles in its own spelling however written ("Agent,Customer" gets the platform's
    speaker ids, customer 1 and agent 2, like a pushed transcript). ValueError says what is wrong."""
    if value and (len(value) != 2 or value[0].casefold() == value[1].casefold()):
        raise ValueError("give two different role names, channel 0 first (e.g. customer,agent)")
    if any(role.casefold() in ("mix", "mixed", "0", "1") for role in value):
        raise ValueError("role names cannot be mix, mixed, 0 or 1 (those name channels already)")
    return tuple(role.casefold() if role.casefold() in ("customer", "agent") else role for role in value)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus overrides), or raise one error listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_problems(exc)) from None


def load_asr_settings() -> AsrSettings:
    """Only the transcription settings (what ``cte1-mcp models`` needs), every problem at once."""
    try:
        return AsrSettings()
    except ValidationError as exc:
        raise ConfigurationError(describe_problems(exc)) from None


def describe_problems(exc: ValidationError) -> str:
    """Every problem on its own line, named by its variable; never the rejected value (it may be a key)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in err["loc"])
        name = f"CTE1_{field.upper()}" if field else "settings"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "is required"
        lines.append(f"  - {name}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)

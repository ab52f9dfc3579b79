"""Configuration from ``CTE1_*`` environment variables; one error that lists every problem.

The API key is held as a ``SecretStr`` and never appears in a message, a log line or a repr.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from platformdirs import user_cache_dir
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
from cte1_mcp.units import MiB


def default_cache_dir() -> Path:
    return Path(user_cache_dir("cte1-mcp", appauthor=False))


class Settings(BaseSettings):
    """Everything the server needs to reach CT-e1 and keep recordings safely."""

    model_config = SettingsConfigDict(env_prefix="CTE1_", extra="ignore", frozen=True)

    base_url: AnyHttpUrl = Field(description="https://<domain> given in the 汎用API申込書")
    api_version: str = Field("v1", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    source_uuid: UUID = Field(description="アクセス元UUID assigned to this caller")
    api_key: SecretStr | None = Field(None, description="The General API secret key")
    api_key_file: Path | None = Field(
        None, validate_default=True, description="A file holding the key (first line)"
    )
    allowed_tenants: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Comma-separated tenant ids this server may read; empty means any"
    )
    min_interval_seconds: float = Field(5.0, ge=0, le=3600)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    max_audio_bytes: int = Field(512 * MiB, ge=1)
    timeout_seconds: float = Field(30.0, gt=0, le=3600)
    inline_audio_max_bytes: int = Field(512 * 1024, ge=0)
    resource_max_bytes: int = Field(
        64 * MiB, ge=1, description="Largest recording returned as a resource blob (one JSON-RPC message)"
    )
    retention_hours: float = Field(24.0, gt=0, le=31 * 24)
    cache_max_bytes: int = Field(2048 * MiB, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Server log level (logs go to stderr; stdout belongs to MCP over stdio)"
    )
    http_token: SecretStr | None = Field(None, description="Bearer token MCP clients must send over HTTP")
    http_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Host header values accepted over HTTP besides loopback (DNS-rebinding protection)"
    )

    @field_validator("base_url")
    @classmethod
    def _https_off_loopback(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        # The one General API key would otherwise travel in clear text.
        if value.scheme != "https" and not is_loopback(value.host or ""):
            raise ValueError("must be https:// (plain http:// is allowed only for a loopback simulator)")
        return value

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty")
        return value

    @field_validator("allowed_tenants", "http_allowed_hosts", mode="before")
    @classmethod
    def _split_tenants(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_tenants")
    @classmethod
    def _tenants_are_digits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in value if not (t.isascii() and t.isdigit())]
        if bad:
            raise ValueError(f"tenant ids must be digits only; not: {', '.join(bad)}")
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
        if value is not None and not _read_key_file(value):
            raise ValueError("CTE1_API_KEY_FILE is empty")
        return value

    @model_validator(mode="after")
    def _load_key_file(self) -> Settings:
        if self.api_key_file is not None:
            object.__setattr__(self, "api_key", SecretStr(_read_key_file(self.api_key_file)))
        return self

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value: ``Bearer <key>``, or the key as given if it already says so."""
        assert self.api_key is not None  # guaranteed by _one_key_source
        key = self.api_key.get_secret_value().strip()
        return key if key.startswith("Bearer ") else f"Bearer {key}"

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


def _read_key_file(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"CTE1_API_KEY_FILE cannot be read ({exc.strerror})") from None
    return lines[0].strip() if lines else ""


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus overrides), or raise one error listing every problem."""
    try:
        return Settings(**overrides)
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

"""Settings base shared by every Watus process.

Each service defines one `pydantic-settings` class that derives from `WatusSettings` with its own env
prefix (`WATUS_LLM_`, `WATUS_VISION_`, ...). The same names are used in `deploy/` env files and the
README, so a setting is spelled the same everywhere a user meets it.

The four HTTP processes derive from `ServiceSettings`, which adds what every one of them is guarded by
(`watus.core.security`): its API key, whether it may listen off loopback without one, and the largest
request body. One key for all of them is `WATUS_API_KEY`; `WATUS_<SVC>_API_KEY` overrides it for one
service (empty: none there), and `service_key` resolves it the same way for the clients of a service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Ports of the design (README, DESIGN.md): one per process, all on loopback by default.
DEFAULT_PORTS = {"llm": 8080, "vision": 8081, "audio": 8082, "agent": 8090}
#: Env prefix of each process's settings, by the names of `DEFAULT_PORTS`.
ENV_PREFIXES = {"llm": "WATUS_LLM_", "vision": "WATUS_VISION_", "audio": "WATUS_AUDIO_", "agent": "WATUS_AGENT_"}
#: The key of every process whose own `WATUS_<SVC>_API_KEY` is not set.
GLOBAL_KEY_ENV = "WATUS_API_KEY"
#: Listening off loopback without a key is allowed for every process whose own `..._ALLOW_INSECURE` is not set.
GLOBAL_INSECURE_ENV = "WATUS_ALLOW_INSECURE"


class WatusSettings(BaseSettings):
    """Base of every service's settings: env-driven, nested with `__`, strict about unknown fields."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
        case_sensitive=False,
    )

    log_level: str = Field("INFO", description="Python logging level of the process.")
    log_json: bool = Field(False, description="Log one JSON object per line (for journald/collectors).")


def settings_reference(cls: type[BaseSettings]) -> list[dict[str, Any]]:
    """Every field of a settings class with its env var, default and description (for docs/CLI)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    rows = []
    for name, field in cls.model_fields.items():
        # A computed default depends on the machine: say so rather than print this machine's value.
        default = "(computed)" if field.default_factory is not None else field.get_default()
        rows.append(
            {
                "name": name,
                "env": (prefix + name).upper(),
                "default": default,
                "description": field.description or "",
            }
        )
    return rows


def service_key(service: str, env: Mapping[str, str] | None = None) -> str | None:
    """The key `service` ("llm", "vision", "audio", "agent") requires, hence the one its clients send.

    Its own `WATUS_<SVC>_API_KEY` when that is set at all (set empty: no key for this service, whatever
    `WATUS_API_KEY` says), else `WATUS_API_KEY`; None when neither gives one. `env` defaults to this process's.
    """
    source = os.environ if env is None else env
    own = ENV_PREFIXES[service] + "API_KEY"
    value = source[own] if own in source else source.get(GLOBAL_KEY_ENV, "")
    return value.strip() or None


def auth_headers(key: str | None) -> dict[str, str]:
    """Headers of a client of a Watus service that requires `key` (none when it requires none)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def reveal(secret: SecretStr | None) -> str | None:
    """The text of an optional secret setting."""
    return secret.get_secret_value() if secret is not None else None


def _global_key() -> SecretStr | None:
    value = os.environ.get(GLOBAL_KEY_ENV, "").strip()
    return SecretStr(value) if value else None


def _global_insecure() -> bool:
    return os.environ.get(GLOBAL_INSECURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class ServiceSettings(WatusSettings):
    """Base of the four HTTP processes' settings: how each is guarded (`watus.core.security`)."""

    api_key: SecretStr | None = Field(
        default_factory=_global_key,
        description="Key every endpoint but `/health` and `/metrics` requires (`Authorization: Bearer <key>` or "
        "`X-API-Key: <key>`; 401 without it). Default: `WATUS_API_KEY`; set empty here for no key on this service "
        "alone. Needed to listen off loopback (or `..._ALLOW_INSECURE`).")
    allow_insecure: bool = Field(
        default_factory=_global_insecure,
        description="Listen on a non-loopback address without an API key (anyone who can reach the port is "
        "answered). Default: `WATUS_ALLOW_INSECURE`, else false: the process refuses to start.")
    max_body_bytes: int = Field(
        2**20, ge=1024, le=2**31,
        description="Largest request body (bytes) of an endpoint without a limit of its own; a larger one gets "
        "413 with an error body, also when it is sent chunked (without Content-Length).")

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value().strip() else None

    @classmethod
    def env_prefix(cls) -> str:
        return str(cls.model_config.get("env_prefix", "")).upper()

    def key(self) -> str | None:
        """The API key this process requires, or None (spaces an env file leaves around it are not part of it)."""
        value = reveal(self.api_key)
        return value.strip() if value else None

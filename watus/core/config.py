"""Settings base shared by every Watus process.

Each service defines one `pydantic-settings` class that derives from `WatusSettings` with its own env
prefix (`WATUS_LLM_`, `WATUS_VISION_`, ...). The same names are used in `deploy/` env files and the
README, so a setting is spelled the same everywhere a user meets it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Ports of the design (README, DESIGN.md): one per process, all on loopback by default.
DEFAULT_PORTS = {"llm": 8080, "vision": 8081, "audio": 8082, "agent": 8090}


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

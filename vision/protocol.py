"""Wire schemas of the vision service. The scene itself is the shared contract in `watus.core.wire.scene`;
this module adds what only the service's own endpoints send (health, source state)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from watus.core.wire.scene import (  # re-exported: the vision service's own names for its wire types
    AgeEstimate,
    Box,
    DetectedObject,
    LabelScore,
    Person,
    Scene,
    StageTimings,
)

__all__ = ["AgeEstimate", "Box", "DetectedObject", "ErrorInfo", "ErrorResponse", "Health", "LabelScore", "Person",
           "Scene", "SourceHealth", "StageTimings"]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = Field(description="The request field or parameter at fault, if one is.")
    code: str | int | None


class ErrorResponse(BaseModel):
    """The OpenAI-style body of every 4xx/5xx (`watus.core.api_errors`), as the OpenAPI documents it."""

    error: ErrorInfo


class SourceHealth(BaseModel):
    kind: str
    description: str
    state: str = Field(description="connecting, ok, reconnecting, ended or stopped.")
    frames: int
    dropped: int = Field(description="Frames replaced by a newer one before the pipeline took them.")
    reconnects: int = Field(description="Times the source was reopened after a failure.")
    failures: int = Field(description="Failed opens and reads (each followed by a backoff wait).")
    last_error: str | None = None
    retry_in_s: float | None = Field(None, description="Seconds until the next reopen attempt.")


class Health(BaseModel):
    status: str = Field(description="ok, degraded (models ready, source down), loading or error.")
    error: str | None = None
    detector: dict[str, object] | None = None
    faces: bool = False
    source: SourceHealth | None = None
    fps: float | None = None
    last_frame_age_ms: float | None = None
    memory: dict[str, object] | None = Field(None, description="Swap and free memory (watus.core.memwatch).")

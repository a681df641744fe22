"""The shared error handlers (`watus.core.api_errors`) through a tiny FastAPI app, and each service's
settings of them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

import audio.errors
import trt_server.errors
import vision.errors
from watus.core import api_errors
from watus.core.api_errors import APIError, NotReadyError, install_error_handlers


class Message(BaseModel):
    role: str
    content: str


class Chat(BaseModel):
    messages: list[Message]
    max_tokens: int = Field(16, ge=1)


class TeapotError(APIError):
    status = 418
    type = "teapot_error"
    code = "short_and_stout"


def _app(install: Callable[[FastAPI], None] = install_error_handlers) -> FastAPI:
    app = FastAPI()
    install(app)

    @app.post("/chat")
    async def chat(body: Chat) -> dict[str, int]:
        return {"n": len(body.messages)}

    @app.get("/scene")
    async def scene(max_age_ms: Annotated[float | None, Query(ge=0)] = None) -> dict[str, float | None]:
        return {"max_age_ms": max_age_ms}

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        if name == "teapot":
            raise TeapotError("I am a teapot.", param="kettle", headers={"Retry-After": "7"})
        if name == "not_ready":
            raise NotReadyError("Model not ready: loading", headers={"Retry-After": "5"})
        if name == "engine":
            raise api_errors.InternalEngineError("engine crashed")
        if name == "http413":
            raise HTTPException(413, "Request body too large")
        json.loads("{not json")

    return app


async def _call(app: FastAPI, method: str, url: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, **kw)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def test_validation_error_names_the_field() -> None:
    err = _error(await _call(_app(), "POST", "/chat", json={"messages": [{"role": "user", "content": 3}]}), 400)
    assert err == {"message": "messages.0.content: Input should be a valid string", "type": "invalid_request_error",
                   "param": "messages.0.content", "code": None}


async def test_missing_field_and_more_problems() -> None:
    err = _error(await _call(_app(), "POST", "/chat", json={"max_tokens": 0}), 400)
    assert err["param"] == "messages"
    assert err["message"] == "messages: field required (and 1 more problems)"


async def test_query_parameter_is_named_without_its_source() -> None:
    err = _error(await _call(_app(), "GET", "/scene", params={"max_age_ms": -1}), 400)
    assert err["param"] == "max_age_ms" and err["message"].startswith("max_age_ms: ")


async def test_malformed_json_is_400() -> None:
    r = await _call(_app(), "POST", "/chat", content=b'{"messages": [', headers={"content-type": "application/json"})
    err = _error(r, 400)
    assert err["message"].startswith("Request body is not valid JSON: ")
    assert err["type"] == "invalid_request_error" and err["param"] is None and err["code"] is None


async def test_json_decode_error_raised_in_a_route_is_400() -> None:
    err = _error(await _call(_app(), "GET", "/raise/json"), 400)
    assert err["message"].startswith("Request body is not valid JSON: Expecting property name")


async def test_unknown_route_and_wrong_method() -> None:
    err = _error(await _call(_app(), "GET", "/nothing"), 404)
    assert err == {"message": "Not Found", "type": "invalid_request_error", "param": None, "code": "not_found"}
    r = await _call(_app(), "DELETE", "/chat")
    assert _error(r, 405)["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"


async def test_api_error_subclass_keeps_status_body_and_headers() -> None:
    r = await _call(_app(), "GET", "/raise/teapot")
    err = _error(r, 418)
    assert err == {"message": "I am a teapot.", "type": "teapot_error", "param": "kettle", "code": "short_and_stout"}
    assert r.headers["retry-after"] == "7"


def test_code_given_at_raise_overrides_the_class_code() -> None:
    exc = TeapotError("no tea", code="empty_pot")
    assert exc.body()["error"]["code"] == "empty_pot" and TeapotError.code == "short_and_stout"


async def test_5xx_logged_except_quiet_statuses(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.api_errors")
    loud = _app(lambda app: install_error_handlers(app, logger=logger))
    quiet = _app(lambda app: install_error_handlers(app, logger=logger, quiet_statuses={503}))
    with caplog.at_level(logging.ERROR, logger="tests.api_errors"):
        assert _error(await _call(loud, "GET", "/raise/not_ready"), 503)["code"] == "model_loading"
        assert _error(await _call(quiet, "GET", "/raise/not_ready"), 503)["type"] == "server_not_ready"
        assert _error(await _call(quiet, "GET", "/raise/engine"), 500)["code"] == "engine_error"
        assert _error(await _call(quiet, "GET", "/raise/teapot"), 418)
    messages = [r.getMessage() for r in caplog.records if r.name == "tests.api_errors"]
    assert messages == ["request failed: Model not ready: loading", "request failed: engine crashed"]


async def test_http_codes_extend_the_defaults() -> None:
    assert _error(await _call(_app(), "GET", "/raise/http413"), 413)["code"] is None
    app = _app(lambda app: install_error_handlers(app, http_codes={413: "file_too_large"}))
    err = _error(await _call(app, "GET", "/raise/http413"), 413)
    assert err == {"message": "Request body too large", "type": "invalid_request_error", "param": None,
                   "code": "file_too_large"}
    assert _error(await _call(app, "GET", "/nothing"), 404)["code"] == "not_found"


# -- each service's errors module: the shared names, its own codes and its handler settings -------------------------

@pytest.mark.parametrize("module", [trt_server.errors, audio.errors, vision.errors])
def test_services_re_export_the_shared_types(module: Any) -> None:
    for name in ("APIError", "BadRequestError", "NotReadyError", "InternalEngineError", "error_body"):
        assert getattr(module, name) is getattr(api_errors, name)


def test_overloaded_codes_stay_per_service() -> None:
    for cls, code in ((trt_server.errors.OverloadedError, "queue_full"), (vision.errors.OverloadedError, "busy")):
        assert issubclass(cls, api_errors.OverloadedError)
        assert cls("busy").body() == {"error": {"message": "busy", "type": "server_overloaded", "param": None,
                                                "code": code}}
        assert cls.status == 503


async def test_audio_maps_a_413_to_file_too_large() -> None:
    err = _error(await _call(_app(audio.errors.install_error_handlers), "GET", "/raise/http413"), 413)
    assert err["code"] == "file_too_large"
    assert _error(await _call(_app(trt_server.errors.install_error_handlers), "GET", "/raise/http413"), 413)[
        "code"] is None


@pytest.mark.parametrize(("module", "logged"), [(trt_server.errors, True), (audio.errors, True),
                                                 (vision.errors, False)])
async def test_which_services_log_a_503(module: Any, logged: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger=module.__name__):
        _error(await _call(_app(module.install_error_handlers), "GET", "/raise/not_ready"), 503)
        _error(await _call(_app(module.install_error_handlers), "GET", "/raise/engine"), 500)
    names = [r.name for r in caplog.records if r.getMessage().startswith("request failed")]
    assert names == [module.__name__] * (2 if logged else 1)

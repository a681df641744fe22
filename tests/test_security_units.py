"""The pieces of the security model in-process: key resolution, the bind check, `watus doctor`'s lines, the
key check with its cookie, the body limit, and the catch-all 500 (the processes: `test_security.py`)."""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import PlainTextResponse

from tests.test_security import AUDIO_KEY, GLOBAL_KEY, VISION_KEY, _error, _guard_setting, _pieces
from trt_server.settings import LLMSettings
from watus.agent.settings import AgentSettings
from watus.core import api_errors
from watus.core.api_errors import install_error_handlers
from watus.core.bodylimit import BodyLimit, Limit
from watus.core.config import service_key
from watus.core.security import KEY_COOKIE, bind_refusal, install_security


async def _apieces(data: bytes) -> Any:
    for chunk in _pieces(data, 1000):
        yield chunk


# --- key resolution and the bind check ------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in filter(_guard_setting, list(os.environ)):
        monkeypatch.delenv(name)
    return monkeypatch


def test_one_key_for_all_overridable_per_service(clean_env: pytest.MonkeyPatch) -> None:
    assert LLMSettings().key() is None and service_key("llm") is None
    clean_env.setenv("WATUS_API_KEY", GLOBAL_KEY)
    clean_env.setenv("WATUS_VISION_API_KEY", VISION_KEY)
    clean_env.setenv("WATUS_AUDIO_API_KEY", "")  # set empty: no key for this one service
    assert LLMSettings().key() == GLOBAL_KEY
    assert [service_key(s) for s in ("llm", "vision", "audio", "agent")] == [GLOBAL_KEY, VISION_KEY, None, GLOBAL_KEY]
    agent = AgentSettings()
    assert agent.key() == GLOBAL_KEY
    # The agent's clients send each peer the key that peer requires, from the peer's own settings' names.
    assert agent.llm_api_key is not None and agent.llm_api_key.get_secret_value() == GLOBAL_KEY
    assert agent.vision_api_key is not None and agent.vision_api_key.get_secret_value() == VISION_KEY
    assert agent.audio_api_key is None
    clean_env.setenv("WATUS_AGENT_LLM_API_KEY", "elsewhere")
    assert AgentSettings().llm_api_key.get_secret_value() == "elsewhere"  # type: ignore[union-attr]
    assert service_key("llm", {"WATUS_LLM_API_KEY": " k "}) == "k" and service_key("llm", {}) is None


def test_non_loopback_needs_a_key_or_allow_insecure(clean_env: pytest.MonkeyPatch) -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        assert bind_refusal("LLM server", LLMSettings(), host, 8080) is None
    refusal = bind_refusal("LLM server", LLMSettings(), "0.0.0.0", 8080)
    assert refusal is not None and "\n" not in refusal
    assert "WATUS_LLM_API_KEY" in refusal and "WATUS_LLM_ALLOW_INSECURE=true" in refusal and "0.0.0.0:8080" in refusal
    assert bind_refusal("LLM server", LLMSettings(api_key="k"), "0.0.0.0", 8080) is None
    assert bind_refusal("LLM server", LLMSettings(allow_insecure=True), "192.0.2.7", 8080) is None
    clean_env.setenv("WATUS_ALLOW_INSECURE", "true")
    assert LLMSettings().allow_insecure and AgentSettings().allow_insecure
    clean_env.setenv("WATUS_AGENT_ALLOW_INSECURE", "false")  # the service's own setting wins
    assert not AgentSettings().allow_insecure


def test_doctor_says_how_each_process_is_guarded(clean_env: pytest.MonkeyPatch) -> None:
    from watus.cli.services import security_checks

    clean_env.setenv("WATUS_VISION_HOST", "0.0.0.0")
    clean_env.setenv("WATUS_AUDIO_HOST", "0.0.0.0")
    clean_env.setenv("WATUS_AUDIO_API_KEY", AUDIO_KEY)
    rows = {what.split()[0]: (what, ok, fix) for what, ok, fix in security_checks()}
    assert set(rows) == {"llm", "vision", "audio", "agent"}
    assert rows["llm"][1] and "loopback only" in rows["llm"][0] and "no API key" in rows["llm"][0]
    what, ok, fix = rows["vision"]
    assert not ok and "reachable from the network" in what and "WATUS_VISION_API_KEY" in fix
    assert rows["audio"][1] and "API key required" in rows["audio"][0]


# --- the key check and the body limit in-process -------------------------------------------------------------


class Text(BaseModel):
    text: str


def _app(key: str | None, *, login: bool = False, max_body: int = 1024) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_security(app, LLMSettings(api_key=key, max_body_bytes=max_body),
                     paths={"/upload": Limit(4096, "WATUS_TEST_MAX_UPLOAD_BYTES", code="file_too_large",
                                             param="file")},
                     login_paths=("/",) if login else ())

    @app.get("/")
    async def page() -> dict[str, str]:
        return {"page": "yes"}

    @app.post("/echo")
    async def echo(body: Text) -> dict[str, int]:
        return {"n": len(body.text)}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    for path in ("/health", "/metrics"):
        app.add_api_route(path, lambda: {"ok": True}, methods=["GET"])

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    return app


async def _call(app: Any, method: str, url: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, **kw)


async def test_key_check() -> None:
    app = _app("s3cret")
    missing = await _call(app, "POST", "/echo", json={"text": "hi"})
    err = _error(missing, 401)
    assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
    assert err["message"].startswith("No API key") and "WATUS_LLM_API_KEY" in err["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = await _call(app, "POST", "/echo", json={"text": "hi"}, headers={"Authorization": "Bearer nope"})
    assert _error(wrong, 401)["message"].startswith("Wrong API key") and wrong.headers["www-authenticate"] == "Bearer"
    for headers in ({"Authorization": "Bearer s3cret"}, {"authorization": "bearer s3cret"}, {"X-API-Key": "s3cret"}):
        r = await _call(app, "POST", "/echo", json={"text": "hi"}, headers=headers)
        assert r.status_code == 200 and r.json() == {"n": 2}, headers
    for path in ("/health", "/metrics"):
        assert (await _call(app, "GET", path)).status_code == 200
    # Unknown paths need the key too (a 404 would tell a scanner what exists).
    _error(await _call(app, "GET", "/nothing"), 401)
    # Without login paths neither `?key=` nor the cookie stands for the key.
    _error(await _call(app, "GET", "/", params={"key": "s3cret"}), 401)
    _error(await _call(app, "GET", "/", headers={"Cookie": f"{KEY_COOKIE}=s3cret"}), 401)
    # No key configured: everything is open.
    assert (await _call(_app(None), "POST", "/echo", json={"text": "hi"})).status_code == 200


async def test_login_path_sets_a_cookie_that_stands_for_the_key() -> None:
    app = _app("s3cret", login=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        _error(await client.get("/", params={"key": "wrong"}), 401)
        _error(await client.post("/echo", params={"key": "s3cret"}, json={"text": "hi"}), 401)  # login paths only
        page = await client.get("/", params={"key": "s3cret"})
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{KEY_COOKIE}=s3cret") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/" in cookie
        # The client keeps the cookie: the page's own requests (fetch, EventSource) need nothing else.
        assert (await client.post("/echo", json={"text": "hi"})).status_code == 200
        client.cookies.set(KEY_COOKIE, "forged")
        _error(await client.post("/echo", json={"text": "hi"}), 401)


async def test_body_limit_with_and_without_content_length() -> None:
    app = _app(None)
    json_type = {"content-type": "application/json"}
    assert (await _call(app, "POST", "/echo", json={"text": "x" * 900})).status_code == 200
    declared = await _call(app, "POST", "/echo", json={"text": "x" * 2000})
    err = _error(declared, 413)
    assert err["code"] == "request_too_large" and "WATUS_LLM_MAX_BODY_BYTES" in err["message"]
    assert declared.headers["connection"] == "close"
    chunked = await _call(app, "POST", "/echo", content=_apieces(b"x" * 3000), headers=json_type)
    assert _error(chunked, 413)["code"] == "request_too_large"
    # A path with its own limit and code.
    assert (await _call(app, "POST", "/upload", content=b"x" * 4000)).json() == {"n": 4000}
    up = _error(await _call(app, "POST", "/upload", content=_apieces(b"x" * 5000)), 413)
    assert up["code"] == "file_too_large" and up["param"] == "file" and "WATUS_TEST_MAX_UPLOAD_BYTES" in up["message"]


async def test_body_limit_answers_itself_when_nothing_inside_answers() -> None:
    async def read_all(scope: Any, receive: Any, send: Any) -> None:  # a bare ASGI app: no exception handling
        size, more = 0, True
        while more:
            message = await receive()
            size, more = size + len(message.get("body", b"")), message.get("more_body", False)
        await PlainTextResponse(str(size))(scope, receive, send)

    bare = BodyLimit(read_all, Limit(100, "SOME_SETTING"))
    assert (await _call(bare, "POST", "/", content=b"x" * 100)).text == "100"
    err = _error(await _call(bare, "POST", "/", content=_apieces(b"x" * 500)), 413)
    assert err["code"] == "request_too_large" and "SOME_SETTING" in err["message"]
    assert _error(await _call(bare, "POST", "/", content=b"x" * 500), 413)["code"] == "request_too_large"


async def test_an_unexpected_exception_is_a_json_500_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        r = await _call(_app(None), "GET", "/boom")
    err = _error(r, 500)
    assert err["type"] == "server_error" and "RuntimeError" in err["message"] and "a bug" not in err["message"]
    logged = [rec for rec in caplog.records if rec.name == api_errors.__name__]
    assert len(logged) == 1 and "GET /boom" in logged[0].getMessage() and logged[0].exc_info is not None
    # uvicorn's own "Exception in ASGI application" for the same exception is dropped, no other.
    for exc, kept in ((logged[0].exc_info[1], False), (RuntimeError("another"), True)):
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application",
                                   None, (RuntimeError, exc, None))
        assert bool(logging.getLogger("uvicorn.error").filter(record)) is kept

"""Schemathesis against a running service's own OpenAPI, with a small, reproducible example budget.

`fuzz()` loads `/openapi.json` from a real server, generates requests for every operation the schema
declares (valid ones, then invalid ones), sends them and checks each answer:

- no 5xx, except a 503 with the error body (not ready, no camera yet, stale scene, queue full): those
  are states a client is told to retry through;
- every 4xx/5xx carries the OpenAI-style body `{"error": {"message", "type", "param", "code"}}`;
- the body conforms to the response schema the OpenAPI declares for its status (schemathesis'
  `response_schema_conformance`).

Event streams are read for a few events only (schemathesis cuts them short), and `bound` lets a
test cap what a request may cost (tokens to generate) before it is sent. Generation is derandomized,
so a failure in CI reproduces locally; the report names each failing operation with a curl command.
A request may take up to `timeout_s` (generous: the CI machine's two cores are shared with other
jobs, and a 135M-model turn then takes tens of seconds); one that takes longer is a failure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

#: Examples per operation and generation mode (valid data, then invalid data); more for a longer hunt.
DEFAULT_EXAMPLES = int(os.environ.get("WATUS_FUZZ_EXAMPLES", "12"))
#: `WATUS_FUZZ_STRICT=1`: every service held to the statuses and content types its OpenAPI declares.
STRICT = os.environ.get("WATUS_FUZZ_STRICT") == "1"

Bound = Callable[[Case], None]

# Image types schemathesis has no sample or serializer of are sent as raw bytes, as octet-stream is.
schemathesis.serializer.alias("image/bmp", "application/octet-stream")


class FuzzFailure(AssertionError):
    """An answer that breaks one of the rules of the module docstring."""


def error_problem(content_type: str, body: bytes) -> str | None:
    """What is wrong with an error response's body, or None when it is the OpenAI-style error body."""
    if not content_type.startswith("application/json"):
        return f"content-type {content_type!r}, not application/json"
    try:
        doc = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict) or set(doc) != {"error"}:
        return "the body is not {\"error\": {...}}"
    if set(err) != {"message", "type", "param", "code"}:
        return f"the error has the keys {sorted(err)}, not message/type/param/code"
    if not isinstance(err["message"], str) or not err["message"] or not isinstance(err["type"], str):
        return "the error has no message or type"
    if err["param"] is not None and not isinstance(err["param"], str):
        return "the error's param is not a string"
    return None


def check_response(case: Case, response: schemathesis.Response, *, strict: bool = False) -> None:
    """Raise `FuzzFailure` (or schemathesis' failure group) when the answer breaks a rule; `strict`: also
    when its status or content type is not one the OpenAPI declares for the operation."""
    status = response.status_code
    content_type = (response.headers.get("content-type") or [""])[0]
    if status >= 400:
        problem = error_problem(content_type, response.content or b"")
        if status >= 500 and (status != 503 or problem):
            raise FuzzFailure(f"server error {status}: {(response.content or b'')[:600]!r}")
        if problem:
            raise FuzzFailure(f"{status} without the OpenAI-style error body ({problem}): "
                              f"{(response.content or b'')[:300]!r}")
    checks = [response_schema_conformance]
    if strict:
        checks += [status_code_conformance, content_type_conformance]
    case.validate_response(response, checks=checks)


@dataclass
class Report:
    """What one `fuzz()` run did: requests sent per operation, and the failures found."""

    calls: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    slowest: dict[str, tuple[float, str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join(f"  {op}: {n} requests in {self.seconds[op]:.1f} s (slowest {self.slowest[op][0]:.1f} s), "
                         f"statuses {sorted(self.statuses[op])}" for op, n in self.calls.items())


def load_schema(base_url: str, *, max_stream_events: int = 2, timeout_s: float = 120.0) -> schemathesis.BaseSchema:
    # No sanitizing of the reports: `max_tokens` is no secret, and a curl line with "[Filtered]" reproduces nothing.
    config = schemathesis.Config.from_dict({"max-stream-events": max_stream_events, "request-timeout": timeout_s,
                                            "output": {"sanitization": {"enabled": False}}})
    return schemathesis.openapi.from_url(base_url + "/openapi.json", config=config)


def call_checked(base_url: str, method: str, path: str, *, strict: bool = False, **case: Any) -> schemathesis.Response:
    """One request the fuzzer would not think of (a real image, say), given as `operation.Case` fields, with
    the same checks as `fuzz()`."""
    operation = load_schema(base_url)[path][method]
    made = operation.Case(**case)
    response = made.call(base_url=base_url, timeout=60)
    check_response(made, response, strict=strict)
    return response


def fuzz(base_url: str, *, exclude: Collection[str] = (), bound: Bound | None = None,
         max_examples: int = DEFAULT_EXAMPLES, examples: Mapping[str, int] | None = None, max_stream_events: int = 2,
         timeout_s: float = 120.0, strict: bool = False,
         modes: Collection[str] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)) -> Report:
    """Fuzz every operation of the service at `base_url` but those whose path is in `exclude`, with
    `max_examples` per generation mode, or `examples[label]` for an operation named there ("POST /v1/chat");
    `strict`: see `check_response`."""
    schema = load_schema(base_url, max_stream_events=max_stream_events, timeout_s=timeout_s)
    strict = strict or STRICT
    report = Report()
    session = requests.Session()
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # a schema schemathesis cannot read is a failure of its own
            raise result.err()
        operation = result.ok()
        if operation.path in exclude:
            continue
        label = operation.label
        report.calls[label] = 0
        report.statuses[label] = set()
        report.slowest[label] = (0.0, "")
        started = time.perf_counter()
        budget = (examples or {}).get(label, max_examples)
        for mode in modes:
            _fuzz_operation(operation, GenerationMode(mode), base_url, session, bound, budget, timeout_s, strict,
                            report)
        report.seconds[label] = time.perf_counter() - started
    session.close()
    return report


def _fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, session: requests.Session,
                    bound: Bound | None, max_examples: int, timeout_s: float, strict: bool, report: Report) -> None:
    label = operation.label
    sent: list[Case] = []

    @hypothesis.settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                         print_blob=False)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Case) -> None:
        if bound is not None:
            bound(case)
        sent.append(case)
        t0 = time.perf_counter()
        response = case.call(base_url=base_url, session=session, timeout=timeout_s)
        took = time.perf_counter() - t0
        if took > report.slowest[label][0]:
            report.slowest[label] = (took, case.as_curl_command(base_url=base_url))
        report.calls[label] += 1
        report.statuses[label].add(response.status_code)
        check_response(case, response, strict=strict)

    try:
        one()
    except hypothesis.errors.Unsatisfiable:  # nothing of this operation can be made invalid (no parameters)
        return
    except (Exception, FailureGroup) as e:  # a failed check, or the server hung up or timed out: report it, go on
        if isinstance(e, FailureGroup):  # schemathesis' report has the response and the curl line
            report.failures.append(f"{label} [{mode.value}]: {e}")
            return
        curl = sent[-1].as_curl_command(base_url=base_url) if sent else "(no request)"
        # Hypothesis wraps a failure that did not repeat (a timeout, a 5xx under load) in a group: say what it was.
        inner = "".join(f"\n    {type(x).__name__}: {x}" for x in getattr(e, "exceptions", ()))
        report.failures.append(f"{label} [{mode.value}]: {type(e).__name__}: {e}{inner}\n    {curl}")

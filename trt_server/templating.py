"""Chat templating with the model's own Jinja template (from GGUF metadata or tokenizer_config.json).

Rendering follows Hugging Face's `apply_chat_template`: a sandboxed Jinja environment with
`trim_blocks`/`lstrip_blocks`, `tojson`, `raise_exception` and `strftime_now`, messages as plain dicts
and `tools` in OpenAI's function format. Small models' templates often know nothing of tools
(SmolLM2's does not): then the tools are described in the system message in the Hermes format and past
tool calls/results are written as `<tool_call>`/`<tool_response>` text, which the tool-call parser reads
back. A model without any template gets ChatML.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trt_server.protocol import AssistantMessage, ChatMessage, SystemMessage, Tool, ToolMessage, content_text

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOOLS_SYSTEM_PROMPT = (
    "You can call functions. The available functions, as JSON schemas, are:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, answer with one <tool_call></tool_call> block per call, each holding a JSON "
    'object {{"name": <function name>, "arguments": <arguments object>}}, and nothing else. '
    "Otherwise answer normally."
)


class TemplateError(ValueError):
    """The model's chat template refused the conversation (e.g. roles out of order)."""


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def _arguments(raw: str) -> Any:
    """Templates index into arguments (`tool_call.arguments | tojson`): give them the parsed object."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _tool_call_text(name: str, arguments: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


class ChatTemplate:
    """One model's template plus what it supports, rendered to the prompt text the model expects."""

    def __init__(self, source: str | None, bos_token: str | None = None, eos_token: str | None = None) -> None:
        self.source = source or CHATML_TEMPLATE
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self.supports_tools = "tools" in self.source
        self.supports_tool_calls = "tool_calls" in self.source
        self.supports_tool_role = "'tool'" in self.source or '"tool"' in self.source
        try:
            self._template = _compile(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"the model's chat template does not compile: {e}") from e

    def messages_as_dicts(self, messages: Sequence[ChatMessage], tools: Sequence[Tool] | None,
                          extra_system: str | None = None) -> list[dict[str, Any]]:
        """OpenAI messages to the dicts templates iterate over, adapted to what this template knows."""
        out: list[dict[str, Any]] = []
        for m in messages:
            if isinstance(m, SystemMessage):
                out.append({"role": "system", "content": content_text(m.content)})
            elif isinstance(m, AssistantMessage):
                text = content_text(m.content)
                calls = m.tool_calls or []
                if calls and self.supports_tool_calls:
                    # "" rather than None: templates concatenate content with `+`.
                    out.append({"role": "assistant", "content": text, "tool_calls": [
                        {"id": c.id, "type": "function",
                         "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                        for c in calls]})
                else:
                    parts = [text] if text else []
                    parts += [_tool_call_text(c.function.name, _arguments(c.function.arguments)) for c in calls]
                    out.append({"role": "assistant", "content": "\n".join(parts)})
            elif isinstance(m, ToolMessage):
                text = content_text(m.content)
                if self.supports_tool_role:
                    out.append({"role": "tool", "content": text, "tool_call_id": m.tool_call_id})
                else:
                    out.append({"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"})
            else:
                out.append({"role": m.role, "content": content_text(m.content)})
        extra = []
        if tools and not self.supports_tools:
            schemas = "\n".join(json.dumps(t.function.model_dump(exclude_none=True), ensure_ascii=False)
                                for t in tools)
            extra.append(TOOLS_SYSTEM_PROMPT.format(tools=schemas))
        if extra_system:
            extra.append(extra_system)
        if extra:
            addition = "\n\n".join(extra)
            if out and out[0]["role"] == "system":
                out[0]["content"] = f"{out[0]['content']}\n\n{addition}" if out[0]["content"] else addition
            else:
                out.insert(0, {"role": "system", "content": addition})
        return out

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[Tool] | None = None,
               extra_system: str | None = None, add_generation_prompt: bool = True) -> str:
        dicts = self.messages_as_dicts(messages, tools, extra_system)
        kwargs: dict[str, Any] = {}
        if tools and self.supports_tools:
            kwargs["tools"] = [t.model_dump(exclude_none=True) for t in tools]
        try:
            return self._template.render(messages=dicts, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token, **kwargs)
        except TemplateError:
            raise
        except jinja2.TemplateError as e:
            raise TemplateError(f"the model's chat template failed on these messages: {e}") from e
        except (TypeError, KeyError, IndexError) as e:
            raise TemplateError(f"the model's chat template cannot render these messages ({e})") from e

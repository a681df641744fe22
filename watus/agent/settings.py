"""Settings of the agent process and the CLI's client side (`WATUS_AGENT_*`)."""

from __future__ import annotations

import enum
import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from watus.core.config import DEFAULT_PORTS, ServiceSettings, service_key


def _service_url(prefix: str, default_port: int) -> str:
    """A peer's URL from its own settings (`WATUS_LLM_PORT`, ...), so changing a port in one place is enough."""
    host = os.environ.get(f"{prefix}HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get(f'{prefix}PORT', default_port)}"


def _peer_key(service: str) -> SecretStr | None:
    """The key a peer requires, from its own settings' names, so one env file configures both ends."""
    key = service_key(service)
    return SecretStr(key) if key else None


class Language(str, enum.Enum):
    en = "en"
    pl = "pl"


class Addressing(str, enum.Enum):
    """Which speech the robot answers."""

    always = "always"  # everything it hears
    name = "name"  # speech that names it; then follow-ups for `conversation_window_s`
    wake = "wake"  # after the wake word (the audio service's `WATUS_AUDIO_WAKE_WORD`), for the window


class Pipeline(str, enum.Enum):
    streaming = "streaming"
    sequential = "sequential"


class AgentSettings(ServiceSettings):
    """The agent: where the other services are, who the robot is, and how turns are recorded."""

    model_config = SettingsConfigDict(env_prefix="WATUS_AGENT_")

    host: str = Field("127.0.0.1", description="Address of the agent's own HTTP server (/health, /metrics).")
    port: int = Field(DEFAULT_PORTS["agent"], ge=1, le=65535, description="Port of the agent's HTTP server.")
    llm_url: str = Field(default_factory=lambda: _service_url("WATUS_LLM_", DEFAULT_PORTS["llm"]),
                         description="LLM server base URL (any OpenAI-compatible server; `/v1` is appended). "
                         "Default: from WATUS_LLM_HOST/PORT, i.e. http://127.0.0.1:8080.")
    llm_model: str = Field("default", description="Model name sent to the LLM server.")
    llm_api_key: SecretStr | None = Field(default_factory=lambda: _peer_key("llm"), description="API key sent "
                                          "to the LLM server. Default: the LLM server's own key (WATUS_LLM_API_KEY, "
                                          "else WATUS_API_KEY); set it for another OpenAI-compatible server.")
    vision_url: str = Field(default_factory=lambda: _service_url("WATUS_VISION_", DEFAULT_PORTS["vision"]),
                            description="Vision service base URL (default: from WATUS_VISION_HOST/PORT).")
    vision_api_key: SecretStr | None = Field(default_factory=lambda: _peer_key("vision"), description="API key "
                                             "sent to the vision service. Default: its own key "
                                             "(WATUS_VISION_API_KEY, else WATUS_API_KEY).")
    audio_url: str = Field(default_factory=lambda: _service_url("WATUS_AUDIO_", DEFAULT_PORTS["audio"]),
                           description="Audio service base URL (default: from WATUS_AUDIO_HOST/PORT).")
    audio_api_key: SecretStr | None = Field(default_factory=lambda: _peer_key("audio"), description="API key "
                                            "sent to the audio service. Default: its own key "
                                            "(WATUS_AUDIO_API_KEY, else WATUS_API_KEY).")
    robot_name: str = Field("Watus", min_length=1, max_length=40, description="The robot's name.")
    robot_name_aliases: str = Field("Watus,Vatus,Wattus,Vaatus,What us", description="Other spellings the ASR "
                                    "gives the name, comma separated (one letter of slack is allowed anyway).")
    addressing: Addressing = Field(Addressing.always, description="Which speech is for the robot: `always` "
                                   "(everything), `name` (an utterance that names it, then follow-ups without "
                                   "the name for `conversation_window_s`) or `wake` (the wake word opens the "
                                   "window). Other speech is an `ignored` event, not a turn.")
    conversation_window_s: float = Field(20.0, ge=0, le=3600, description="After being addressed (or after "
                                         "its last reply), how long follow-ups need neither name nor wake word.")
    language: Language = Field(Language.en, description="Language the robot speaks: `en` or `pl`.")
    persona: str | None = Field(None, description="Persona prompt; empty: the built-in one for the language.")
    tools: bool = Field(False, description="Give the model tools (look again, count, describe a person). Turn on "
                        "with a model that calls tools (the robot's Llama-3-8B/Qwen2.5-7B); the 135M CPU default "
                        "cannot, and a longer prompt only slows it down. The scene is in the prompt either way.")
    pipeline: Pipeline = Field(Pipeline.streaming, description="`streaming`: each sentence is spoken as soon as "
                               "it is complete. `sequential`: the whole reply, then the whole speech (the original "
                               "Watus plan; the baseline of `watus bench e2e`).")
    preemptive: bool = Field(True, description="Start the reply from the speculative transcript at the first "
                             "pause, its audio held until the final transcript confirms the text (then it plays at "
                             "once) or thrown away (the person went on, or said something else). On 2 CPU cores "
                             "it answered 29 % sooner than without (`watus bench e2e`, mode preemptive-tail).")
    warm_prefix: bool = Field(True, description="When someone starts to speak, have the LLM server prefill the "
                              "next prompt up to the question (persona, tools, memory, scene): the turn then "
                              "prefills only the question's tokens, which it reuses from the server's cache.")
    memory_turns: int = Field(6, ge=0, le=100, description="Past turns (question + answer) kept per session: "
                              "when full, the older half is forgotten at once, so the LLM server's cached prompt "
                              "prefix stays valid between drops.")
    max_tokens: int = Field(160, ge=8, le=4096, description="Longest reply, in tokens.")
    temperature: float = Field(0.3, ge=0.0, le=2.0, description="LLM sampling temperature.")
    frequency_penalty: float = Field(0.5, ge=-2.0, le=2.0, description="Penalty on repeated tokens: keeps a small "
                                     "model from saying the same sentence over and over.")
    max_reply_chars: int = Field(600, ge=40, le=20_000, description="A reply is cut here (runaway or garbage "
                                 "output never reaches the speaker in full).")
    sentence_max_chars: int = Field(160, ge=20, le=2000, description="A sentence without punctuation is cut "
                                    "at this length so speech can start.")
    scene_max_age_ms: int = Field(2000, ge=50, le=600_000, description="An older scene is called stale and "
                                  "the robot says so instead of describing it.")
    service_timeout_s: float = Field(5.0, gt=0, le=120, description="Timeout of one call to vision or audio.")
    llm_timeout_s: float = Field(60.0, gt=0, le=600, description="Timeout of one LLM request.")
    turn_log: Path = Field(Path("var/log/turns.jsonl"), description="Turn log (one JSON line per turn).")
    turn_log_max_bytes: int = Field(10_000_000, ge=10_000, description="Rotate the turn log at this size.")
    turn_log_backups: int = Field(5, ge=0, le=100, description="Rotated turn logs kept.")

    @field_validator("llm_api_key", "vision_api_key", "audio_api_key")
    @classmethod
    def _empty_peer_key_is_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value().strip() else None

"""A Hugging Face tokenizer directory as the server's `Tokenizer` (for the TensorRT-LLM engine).

A TensorRT-LLM engine holds no tokenizer: the model's own HF tokenizer (tokenizer.json +
tokenizer_config.json, as shipped next to the checkpoint) is what the chat template, stop tokens and
detokenization must agree with. `transformers` reads every tokenizer format, so it is used when it is
installed (the `trtllm` extra has it); without it the `tokenizers` library reads tokenizer.json and this
module reads tokenizer_config.json itself, which covers every model the robot runs.

Nothing here touches the network: the robot is often offline and a stalled Hub lookup would hold up the
start of the LLM server.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trt_server.engines.base import ModelNotFoundError

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def has_tokenizer_files(path: Path) -> bool:
    """Whether `path` looks like an HF tokenizer directory."""
    return path.is_dir() and any((path / name).is_file() for name in TOKENIZER_FILES)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def _token_text(value: object) -> str | None:
    """A special token from tokenizer_config.json: a string or an AddedToken dict `{"content": ...}`."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"] or None
    return None


def _pick_template(value: object) -> str | None:
    """`chat_template` is a string, or a list/dict of named templates of which "default" is the chat one."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        named = value.get("default")
        return named if isinstance(named, str) else None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item.get("name") == "default":
                return _pick_template(item.get("template"))
    return None


def _read_chat_template(path: Path, config: dict[str, Any]) -> str | None:
    """The template from tokenizer_config.json, or from the separate files newer `transformers` writes."""
    template = _pick_template(config.get("chat_template"))
    if template is not None:
        return template
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8") or None
    return _pick_template(_read_json(path / "chat_template.json").get("chat_template"))


def _generation_eos_ids(path: Path) -> list[int]:
    """End-of-generation ids from generation_config.json (Llama-3 Instruct ends turns with <|eot_id|>)."""
    value = _read_json(path / "generation_config.json").get("eos_token_id")
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def _unique(ids: Sequence[int | None]) -> list[int]:
    out: list[int] = []
    for i in ids:
        if i is not None and i >= 0 and i not in out:
            out.append(i)
    return out


class HFTokenizer:
    """The tokenizer of an HF tokenizer directory, through `transformers` or the `tokenizers` library."""

    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    add_bos: bool
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    #: Every id that ends a generation: the EOS token plus generation_config.json's extra ones.
    eos_token_ids: list[int]

    def __init__(self, path: Path, *, prefer_transformers: bool = True) -> None:
        path = path.expanduser()
        if not has_tokenizer_files(path):
            raise ModelNotFoundError(
                f"No Hugging Face tokenizer in {path} (looked for {', '.join(TOKENIZER_FILES)}). Set "
                "WATUS_LLM_TOKENIZER_PATH to the model's tokenizer directory (the HF checkpoint's directory)."
            )
        self.path = path
        # Fast tokenizers wrapped by `transformers` switch truncation/padding state inside encode, which
        # raises "Already borrowed" when threads share them: the server encodes in worker threads.
        self._lock = threading.Lock()
        self._hf: Any = None
        self._tok: Any = None
        self._add_bos_flag: bool | None = None
        self._add_eos_flag = False
        config = _read_json(path / "tokenizer_config.json")
        loaded = prefer_transformers and self._load_transformers(path)
        if not loaded:
            self._load_tokenizers(path, config)
        self.backend = "transformers" if loaded else "tokenizers"
        with_special = self.encode("", add_special=True)
        self.add_bos = self.bos_token_id is not None and with_special[:1] == [self.bos_token_id]
        self.eos_token_ids = _unique([self.eos_token_id, *_generation_eos_ids(path)])
        log.info("tokenizer %s (%s): bos %r, eos %r, end-of-generation ids %s, chat template %s", path,
                 self.backend, self.bos_token, self.eos_token, self.eos_token_ids,
                 "yes" if self.chat_template else "no")

    def _load_transformers(self, path: Path) -> bool:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers import AutoTokenizer
        except ImportError:
            return False
        try:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # an odd config: tokenizer.json alone still serves
            if not (path / "tokenizer.json").is_file():
                raise ModelNotFoundError(f"transformers could not load the tokenizer in {path}: {e}") from e
            log.warning("transformers could not load the tokenizer in %s (%s); reading tokenizer.json "
                        "directly", path, e, exc_info=True)
            return False
        self._hf = tok
        # Older transformers do not read chat_template.jinja: look there too.
        self.chat_template = (_pick_template(getattr(tok, "chat_template", None))
                              or _read_chat_template(path, _read_json(path / "tokenizer_config.json")))
        self.bos_token = tok.bos_token or None
        self.eos_token = tok.eos_token or None
        self.bos_token_id = tok.bos_token_id
        self.eos_token_id = tok.eos_token_id
        self.pad_token_id = tok.pad_token_id
        return True

    def _load_tokenizers(self, path: Path, config: dict[str, Any]) -> None:
        file = path / "tokenizer.json"
        if not file.is_file():
            raise ModelNotFoundError(
                f"{path} has no tokenizer.json, and `transformers`, which reads the other formats, is not "
                "installed: pip install 'watus[trtllm]'."
            )
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ModelNotFoundError(
                "Reading an HF tokenizer needs `transformers` or `tokenizers`: pip install 'watus[trtllm]'."
            ) from e
        self._tok = Tokenizer.from_file(str(file))
        special_map = _read_json(path / "special_tokens_map.json")
        self.chat_template = _read_chat_template(path, config)
        self.bos_token = _token_text(config.get("bos_token")) or _token_text(special_map.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token")) or _token_text(special_map.get("eos_token"))
        pad_token = _token_text(config.get("pad_token")) or _token_text(special_map.get("pad_token"))
        self.bos_token_id = self._tok.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None
        self.pad_token_id = self._tok.token_to_id(pad_token) if pad_token else None
        # `add_bos_token`/`add_eos_token` in the config override tokenizer.json's post-processor, as
        # transformers' Llama/Gemma tokenizers do; without them the post-processor decides (Llama-3).
        flag = config.get("add_bos_token")
        self._add_bos_flag = flag if isinstance(flag, bool) else None
        self._add_eos_flag = config.get("add_eos_token") is True

    def encode(self, text: str, *, add_special: bool = False) -> list[int]:
        with self._lock:
            if self._hf is not None:
                ids = [int(i) for i in self._hf.encode(text, add_special_tokens=add_special)]
            elif self._add_bos_flag is None:
                ids = list(self._tok.encode(text, add_special_tokens=add_special).ids)
            else:
                ids = list(self._tok.encode(text, add_special_tokens=False).ids)
                if add_special and self._add_bos_flag and self.bos_token_id is not None:
                    ids.insert(0, self.bos_token_id)
                if add_special and self._add_eos_flag and self.eos_token_id is not None:
                    ids.append(self.eos_token_id)
        # A chat template that writes its own BOS plus the tokenizer's add-BOS step would give two.
        bos = self.bos_token_id
        if add_special and bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
            ids = ids[1:]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        # Special tokens stay in the text: the tool-call parser looks for some (<|python_tag|>), and the
        # engines never hand over the end-of-generation token itself. No "clean-up" of spaces either: it
        # rewrites " ," and " 's" and would make incremental and whole-text decoding disagree.
        with self._lock:
            if self._hf is not None:
                return str(self._hf.decode(list(ids), skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False))
            return str(self._tok.decode(list(ids), skip_special_tokens=False))

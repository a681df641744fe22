"""Stopping a reply that goes round in a loop: "I'm not here. I'm not here. I'm not here. ..."

Small models at a low temperature fall into loops that a frequency penalty does not break: the CPU
default (SmolLM2-135M) answered every question of a benchmark run with one sentence said eight times
and a clause said five. A person hears a robot stuck; the loop also keeps the LLM and the speaker busy
to the reply's token limit, and, remembered, it teaches the model to answer the next question the same
way.

`RepeatGuard` sits on the stream of text deltas. The reply is cut into units at `.`, `!`, `?`, `…`,
`,`, `;`, `:` and line breaks; a unit of at least `MIN_WORDS` words that says again what an earlier unit
of the same reply said (case, punctuation and spacing aside) ends the reply before it. A spoken reply
of one to three sentences has no reason to say one clause twice word for word; short ones ("yes,
yes") are left alone. Text goes out as it comes, except while the unit being written could still
become a repeat (it is the start of an earlier one): that much is held back until it either diverges
(and goes out at once) or completes (and ends the reply). So a reply without loops is not delayed, and
a repeat is never spoken, not even its first word.
"""

from __future__ import annotations

import re

from watus.core.words import words

#: A unit this short may repeat ("No, no.", "Yes, yes"); one of this many words or more may not.
MIN_WORDS = 3
_BOUNDARY = re.compile(r"[.!?…,;:\n]")


def normalise(text: str) -> str:
    """A unit's words (`watus.core.words.words`, a typographic apostrophe read as a plain one), one space
    apart."""
    return " ".join(words(text.replace("’", "'")))


class RepeatGuard:
    """Feed the reply's deltas; get back what may be said, and whether the reply has looped."""

    def __init__(self, min_words: int = MIN_WORDS) -> None:
        self._min = min_words
        self._seen: set[str] = set()  # the units said, normalised
        self._said: list[str] = []  # what went out, in order
        self._unit = ""  # the unit being written, from its start (after the last boundary)
        self._held = ""  # the end of `_unit` not given out yet
        self.looped = False

    @property
    def text(self) -> str:
        """What the guard has let out so far: the reply as said."""
        return "".join(self._said)

    def feed(self, delta: str) -> str:
        """The part of the reply that may be said now ("" once it has looped)."""
        if self.looped:
            return ""
        out: list[str] = []
        for m in _BOUNDARY.finditer(delta):
            end = m.end()
            piece, delta = delta[:end], delta[end:]
            if self._close(piece, out):
                return self._emit(out)
        self._unit += delta
        self._held += delta
        if not self._maybe_repeat(normalise(self._unit)):
            out.append(self._held)
            self._held = ""
        return self._emit(out)

    def flush(self) -> str:
        """The end of the reply: what is still held, unless it was a repeat cut short by the reply's end."""
        if self.looped:
            return ""
        held, words = self._held, normalise(self._unit)
        self._unit = self._held = ""
        if words in self._seen and len(words.split()) >= self._min:
            self.looped = True
            return ""
        return self._emit([held])

    def _close(self, piece: str, out: list[str]) -> bool:
        """`piece` ends the unit being written; True if that unit was a repeat (the reply ends before it)."""
        unit = self._unit + piece
        words = normalise(unit)
        if len(words.split()) >= self._min:
            if words in self._seen:
                self.looped = True
                self._unit = self._held = ""
                return True
            self._seen.add(words)
        out.append(self._held + piece)
        self._unit = self._held = ""
        return False

    def _maybe_repeat(self, words: str) -> bool:
        """Whether the unit being written is so far the start of a unit already said."""
        return any(seen.startswith(words) for seen in self._seen)  # "" (only spaces yet) too

    def _emit(self, out: list[str]) -> str:
        text = "".join(out)
        self._said.append(text)
        return text

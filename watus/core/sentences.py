"""Cutting text into sentences: a streamed reply for the agent, a `say` text for the speaker.

One cutter for every process (the agent cuts the LLM stream; the audio service cuts what it is asked to
say into pieces to synthesise), so both agree on what a sentence is.

The agent: each sentence is spoken as soon as it is complete.

The first sentence decides the robot's latency, so a sentence is released at the first safe boundary:
`.`, `!`, `?` or `…` (with closing quotes or brackets) followed by whitespace and then a character that
can start a sentence. What is not a boundary: abbreviations (English and Polish: "e.g.", "Dr.", "np.",
"itd."), initials ("J. Smith"), numbers ("3.5", "1. item" at a line start), and a lower-case word
after the dot. Text with no punctuation (small models, lists) is cut at a length limit, preferring a
comma or a space, so speech never waits for the whole reply.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset({
    # English
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx", "fig", "inc",
    "ltd", "co", "no", "dept", "est", "min", "max", "mt", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "a.m", "p.m", "u.s", "u.k",
    # Polish
    "np", "tzn", "tj", "itd", "itp", "ul", "al", "godz", "doc", "inż", "mgr", "hab", "m.in",
    "tzw", "wg", "ds", "nr", "str", "r", "w", "ww", "pt", "tel", "zob", "przyp", "ang", "łac",
})
_END = re.compile(r"[.!?…]+[\"'”’»)\]]*")
_WORD_BEFORE = re.compile(r"([\w.]+)$")


class SentenceCutter:
    """Feed text deltas; get complete sentences back as soon as they are safe to speak.

    With `first_clause`, a first sentence that the speaker would split at a clause anyway
    (`split_first_clause`: longer than `FIRST_PIECE_MAX_CHARS`) has that clause released as soon as it is
    known, not when the sentence ends: the robot starts talking while the LLM writes the rest.
    """

    def __init__(self, max_chars: int = 160, first_clause: bool = False) -> None:
        self._max = max_chars
        self._buf = ""
        self._first_clause = first_clause
        self._released = 0

    def feed(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._boundary()
            if cut is None:
                cut = self._clause_cut()
            if cut is None:
                cut = self._length_cut()
            if cut is None:
                break
            sentence, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if sentence:
                out.append(sentence)
                self._released += 1
        return out

    def _clause_cut(self) -> int | None:
        """Where the first sentence's first clause ends, once the speaker would split it there anyway."""
        if not self._first_clause or self._released:
            return None
        text = self._buf.lstrip()
        parts = split_first_clause(text.rstrip())
        return len(self._buf) - len(text) + len(parts[0]) if len(parts) == 2 else None

    def flush(self) -> list[str]:
        """The rest, at the end of the reply."""
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    def _boundary(self) -> int | None:
        for m in _END.finditer(self._buf):
            end = m.end()
            rest = self._buf[end:]
            if "\n" in self._buf[: m.start()]:
                # A line break before any punctuation is itself a boundary (lists, paragraphs).
                nl = self._buf.index("\n")
                if self._buf[:nl].strip():
                    return nl + 1
            stripped = rest.lstrip()
            if not stripped:
                # Whitespace seen but not the next word yet, or nothing after: wait for more text.
                return None
            if len(stripped) == len(rest):
                continue  # "3.5", "e.g.x", "...)" glued to more text: not an end
            if self._is_abbreviation(m) or stripped[0].islower():
                continue
            return end
        nl = self._buf.find("\n")
        if nl > 0 and self._buf[:nl].strip() and self._buf[nl + 1:].strip():
            return nl + 1
        return None

    def _is_abbreviation(self, m: re.Match[str]) -> bool:
        if m.group(0)[0] != ".":
            return False
        before = _WORD_BEFORE.search(self._buf[: m.start()])
        if before is None:
            return False
        word = before.group(1).lower().rstrip(".")
        if word in ABBREVIATIONS:
            return True
        if len(word) == 1 and word.isalpha():
            return True  # an initial: "J. Smith"
        line_start = self._buf.rfind("\n", 0, m.start()) + 1
        # "1. First item" at the start of a line is a list number, not an end.
        return word.isdigit() and len(word) <= 2 and self._buf[line_start: m.start()].strip() == word

    def _length_cut(self) -> int | None:
        if len(self._buf) < self._max:
            return None
        window = self._buf[: self._max]
        for sep in (", ", "; ", ": ", " – ", " - ", " "):
            i = window.rfind(sep)
            if i > self._max // 3:
                return i + len(sep)
        return self._max


def split_sentences(text: str) -> list[str]:
    """Sentences of a whole text, whitespace-normalised, none empty (the same cuts as the stream)."""
    cutter = SentenceCutter(max_chars=max(160, len(text) + 1))  # whole text: no length cuts
    return [" ".join(p.split()) for p in (*cutter.feed(text), *cutter.flush()) if p.strip()]


# The speaker synthesises piece by piece so that the first plays while the next is synthesised, and so
# that a barge-in never waits for a long synthesis. Piper's time to first audio grows with the length
# of the first piece (≈0.1 × its duration on 2 cores), so a long first sentence is split once at a
# comma; later sentences are synthesised while earlier ones play, and stay whole for better prosody.
_CLAUSE = re.compile(r"[,;:—–]\s+")
#: A first sentence longer than this many characters (~2.5 s of speech) is split at a clause boundary.
FIRST_PIECE_MAX_CHARS = 40
#: ... but never into parts shorter than this (a lone "Sure," then the rest sounds clipped).
FIRST_PIECE_MIN_CHARS = 12


def split_first_clause(sentence: str, max_chars: int = FIRST_PIECE_MAX_CHARS,
                       min_chars: int = FIRST_PIECE_MIN_CHARS) -> list[str]:
    """A long sentence as [first clause, rest] split at the first suitable comma; else [sentence]."""
    if len(sentence) <= max_chars:
        return [sentence]
    for m in _CLAUSE.finditer(sentence):
        head, tail = sentence[:m.start() + 1].strip(), sentence[m.end():].strip()
        if len(head) >= min_chars and len(tail) >= min_chars:
            return [head, tail]
        if len(head) > max_chars:
            break
    return [sentence]


def speakable_pieces(text: str, first_clause: bool = True) -> list[str]:
    """What the speaker synthesises in order: sentences, the first maybe split at a clause."""
    sentences = split_sentences(text)
    if first_clause and sentences:
        sentences = split_first_clause(sentences[0]) + sentences[1:]
    return sentences

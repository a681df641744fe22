"""Text to speakable pieces: sentences, and a first clause for a faster first audio.

The speaker synthesises piece by piece so that the first plays while the next is synthesised, and so
that a barge-in never waits for a long synthesis. Piper's time to first audio grows with the length
of the first piece (≈0.1 × its duration on 2 cores), so a long first sentence is split once at a
comma; later sentences are synthesised while earlier ones play, and stay whole for better prosody.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (optionally followed by quotes/brackets) and whitespace, or at a newline.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|\n\s*\n|\n(?=\s*[-*•]\s)")
_ABBREVIATIONS = frozenset({
    "mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no.", "fig.",
    "approx.", "dept.", "inc.", "ltd.", "co.", "mt.", "ul.", "np.", "tzn.", "itd.", "itp.",
})
_CLAUSE = re.compile(r"[,;:—–]\s+")
#: A first sentence longer than this many characters (~2.5 s of speech) is split at a clause boundary.
FIRST_PIECE_MAX_CHARS = 40
#: ... but never into parts shorter than this (a lone "Sure," then the rest sounds clipped).
FIRST_PIECE_MIN_CHARS = 12


def _ends_with_abbreviation(text: str) -> bool:
    last = text.rsplit(None, 1)[-1].lower() if text.strip() else ""
    # Single initials ("J. R. R. Tolkien") are abbreviations too.
    return last in _ABBREVIATIONS or bool(re.fullmatch(r"[a-z]\.", last))


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, whitespace-normalised, none empty."""
    pieces: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        candidate = text[start:m.start()]
        if _ends_with_abbreviation(candidate):
            continue
        pieces.append(candidate)
        start = m.end()
    pieces.append(text[start:])
    return [" ".join(p.split()) for p in pieces if p.strip()]


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

"""Words of a transcript: the one definition the listener and the agent share.

Whisper writes the same speech with varying case and punctuation ("Mhm." / "mhm"), so comparisons work
on lower-case words. Fillers and backchannels ("mhm", "uh-huh", "hmm") are sounds, not words: speech that
is only fillers never interrupts the robot. Names are matched with one edit of slack, because the ASR
spells an unusual name in more than one way ("Watus", "Wattus", "Vatus").
"""

from __future__ import annotations

FILLERS = frozenset({
    "mhm", "mm", "mmm", "hm", "hmm", "hmmm", "uh", "uhh", "um", "umm", "er", "erm", "ah", "ahh", "oh", "huh",
    "uh-huh", "uhhuh", "mm-hmm", "mmhmm", "aha", "eh",
})


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (hyphens inside a word kept: "uh-huh")."""
    cleaned = "".join(c.lower() if c.isalnum() or c.isspace() or c in "-'" else " " for c in text)
    return [w.strip("-'") for w in cleaned.split() if w.strip("-'")]


def real_words(text: str) -> list[str]:
    """The words that are not fillers."""
    return [w for w in words(text) if w not in FILLERS]


def _within_one_edit(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def names(text: str, name: str, aliases: tuple[str, ...] = ()) -> bool:
    """Whether `text` names the robot: a word (or run of words) equal to `name` or an alias, give or take
    one letter for names of five letters or more."""
    said = words(text)
    for candidate in (name, *aliases):
        target = words(candidate)
        if not target:
            continue
        joined = "".join(target)
        n = len(target)
        for i in range(len(said) - n + 1):
            window = said[i:i + n]
            if window == target:
                return True
            if len(joined) >= 5 and _within_one_edit("".join(window), joined):
                return True
    return False


def without(text: str, phrase: str) -> list[str]:
    """The real words of `text` once the words of `phrase` (give or take a letter) are taken out."""
    drop = words(phrase)
    return [w for w in real_words(text) if not any(_within_one_edit(w, d) if len(d) >= 4 else w == d
                                                   for d in drop)]

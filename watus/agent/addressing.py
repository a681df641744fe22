"""Whether speech is for the robot: always, when it names the robot, or after the wake word.

A robot among people hears conversations that are not for it. In `name` mode an utterance must name the
robot (its name is a whisper hotword, so the ASR spells it reliably; aliases and one letter of slack
cover the rest); that opens a conversation window in which follow-ups need no name. In `wake` mode the
audio service's wake-word detector opens the window (an utterance that is only the wake phrase is not a
question). Every reply keeps the window open for another `conversation_window_s`. Speech with no real
words (fillers, nothing) is never a turn, in any mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from watus.agent.settings import Addressing, AgentSettings
from watus.core.words import names, real_words, without


@dataclass(frozen=True)
class Verdict:
    for_robot: bool
    #: How it was addressed (always, name, window, wake) or why it was ignored (no_words, not_addressed,
    #: wake_word_only).
    how: str


class Addressee:
    def __init__(self, settings: AgentSettings) -> None:
        self.mode = settings.addressing
        self.name = settings.robot_name
        self.aliases = tuple(a.strip() for a in settings.robot_name_aliases.split(",") if a.strip())
        self.window_ns = int(settings.conversation_window_s * 1e9)
        self._until = 0
        self._wake_phrase: str | None = None
        self._wake_ns = 0

    def window_open(self, now_ns: int) -> bool:
        return now_ns < self._until

    def keep_open(self, now_ns: int) -> None:
        """The robot answered: follow-ups need no name or wake word for another window."""
        if self.mode is not Addressing.always:
            self._until = max(self._until, now_ns + self.window_ns)

    def woke(self, phrase: str, now_ns: int) -> None:
        """The wake word was heard (only `wake` mode listens to it)."""
        if self.mode is Addressing.wake:
            self._wake_phrase, self._wake_ns = phrase, now_ns
            self._until = max(self._until, now_ns + self.window_ns)

    def check(self, text: str, now_ns: int) -> Verdict:
        if not real_words(text):
            return Verdict(False, "no_words")
        if self.mode is Addressing.always:
            return Verdict(True, "always")
        if self.mode is Addressing.name:
            if names(text, self.name, self.aliases):
                self._until = max(self._until, now_ns + self.window_ns)
                return Verdict(True, "name")
            return Verdict(self.window_open(now_ns), "window" if self.window_open(now_ns) else "not_addressed")
        # wake
        if self._wake_phrase is not None and now_ns - self._wake_ns < self.window_ns:
            if not without(text, self._wake_phrase):
                return Verdict(False, "wake_word_only")
            if now_ns - self._wake_ns < 10 * 10**9:  # the question that followed the wake word at once
                return Verdict(True, "wake")
        return Verdict(self.window_open(now_ns), "window" if self.window_open(now_ns) else "not_addressed")

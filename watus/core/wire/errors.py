"""The one error of the wire contracts: a message that does not validate."""

from __future__ import annotations


class WireError(ValueError):
    """A message from another process does not match its contract.

    `kind` is the message's declared type (an event's `type`, or e.g. "scene"), "unknown" if it had none;
    `detail` says which field is wrong. Consumers log and count it; they never default the field.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"invalid {kind} message: {detail}")
        self.kind = kind
        self.detail = detail

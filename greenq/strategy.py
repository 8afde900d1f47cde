"""Pure decisions about a received request.  No I/O; ``now`` is passed in.

The ladder, in order: revoked -> expired -> not yet due (ETA) -> run.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from greenq.protocol import Request

RUN = "run"
REVOKED = "revoked"
EXPIRED = "expired"
WAIT = "wait"


class Decision(NamedTuple):
    action: str
    until: float | None = None  # epoch seconds, for WAIT


DECIDE_RUN = Decision(RUN)
DECIDE_REVOKED = Decision(REVOKED)
DECIDE_EXPIRED = Decision(EXPIRED)


def decide(request: Request, now: float, is_revoked: Callable[[str], bool]) -> Decision:
    """What to do with ``request`` at epoch time ``now``."""
    if is_revoked(request.id):
        return DECIDE_REVOKED
    if request.expires is not None and request.expires <= now:
        return DECIDE_EXPIRED
    if request.eta is not None and request.eta > now:
        return Decision(WAIT, request.eta)
    return DECIDE_RUN

"""Why an input was refused: one exception with a short machine-readable reason.

The reason is the key under which the node counts refusals in its diagnostics (for example
``rejected joint_states non_finite``); the message is the sentence the throttled warning shows.
"""

from __future__ import annotations

from sdm_controller.errors import SdmError

# Reasons an input message is refused (counted per stream).
BAD_ENCODING = "bad_encoding"
BAD_SIZE = "bad_size"
EMPTY_DATA = "empty_data"
NON_FINITE = "non_finite"
MISSING_JOINTS = "missing_joints"
MALFORMED = "malformed"
STAMP_FUTURE = "stamp_future"
STAMP_NOT_INCREASING = "stamp_not_increasing"
STAMP_STALE = "stamp_stale"


class RejectedInput(SdmError):
    """An input message the node refuses; nothing is built from it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

"""Thread priority of the vision worker threads (inference, grabber, uploads).

On a small machine those threads would otherwise take every core from the HTTP event loop; a higher
niceness lets the loop in at once when a request comes.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def lower_priority(nice: int) -> None:
    """Raise the niceness of the calling thread only (Linux: a thread id is a PRIO_PROCESS target).

    Threads created afterwards by this thread (ONNX Runtime's pool) inherit it. Failing is harmless.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as e:
        log.debug("could not lower the thread priority: %s", e)

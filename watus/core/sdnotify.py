"""systemd's notify protocol (`sd_notify`) without depending on systemd or libsystemd.

Under `Type=notify` a service says `READY=1` once its models are loaded and warmed (so `watus-agent`,
ordered `After=` the others, starts only when they can answer), and `WATCHDOG=1` at half the
`WatchdogSec=` interval. The pings come from a task on the asyncio event loop: a loop that is blocked
(inference run on it by mistake, a deadlock) stops pinging and systemd restarts the process. Outside
systemd (`NOTIFY_SOCKET` unset) every call is a cheap no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)


def _address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return None
    # A leading '@' names a socket in the abstract namespace.
    return "\0" + addr[1:] if addr.startswith("@") else addr


def notify(message: str, *, droppable: bool = False) -> bool:
    """Send one notify datagram (e.g. "READY=1\\nSTATUS=..."); False when not under systemd.

    `droppable` (the watchdog pings): never wait for room in the receiver's queue (net.unix.max_dgram_qlen,
    10 datagrams by default). The pings come from the event loop they vouch for, which must not stop
    because the receiver is slow to read; a ping dropped is followed by the next one.
    """
    addr = _address()
    if addr is None:
        return False
    kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | (socket.SOCK_NONBLOCK if droppable else 0)
    try:
        with socket.socket(socket.AF_UNIX, kind) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
        return True
    except BlockingIOError:
        log.debug("sd_notify to %s: the receiver's queue is full; %r dropped", addr, message)
        return False
    except OSError as e:
        log.warning("sd_notify to %s failed: %s", addr, e)
        return False


def ready(status: str = "") -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval_s() -> float | None:
    """Half of `WatchdogSec=` when the watchdog is on for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2e6)
    except ValueError:
        return None


async def watchdog_loop(alive: Callable[[], bool] = lambda: True) -> None:
    """Ping the watchdog from the event loop while `alive()` holds; returns at once without a watchdog."""
    interval = watchdog_interval_s()
    if interval is None or _address() is None:
        return
    log.info("systemd watchdog: pinging every %.1f s", interval)
    while True:
        if alive():
            notify("WATCHDOG=1", droppable=True)
        await asyncio.sleep(interval)

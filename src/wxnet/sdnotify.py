"""systemd's readiness protocol (``Type=notify``), in the few lines it takes.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket); the
service sends one datagram of ``KEY=VALUE`` lines: ``READY=1`` once it serves,
``STOPPING=1`` when it begins to shut down, ``STATUS=...`` for ``systemctl status``
(sd_notify(3)). Outside systemd the variable is unset and :func:`notify` does nothing,
so callers need not know whether they run under it. No dependency on libsystemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["notify"]

log = logging.getLogger("wxnet.sdnotify")


def notify(*lines: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``lines`` (e.g. ``"READY=1"``, ``"STATUS=serving"``) to the service manager.

    Returns:
        True if a datagram was sent; False when there is no ``NOTIFY_SOCKET`` or it
        cannot be reached (logged: readiness that never arrives is systemd's timeout,
        not a crash of the service).
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET %r is not a unix socket path; not notifying", address)
        return False
    payload = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError as exc:
        log.warning("cannot notify the service manager at %r: %s", env["NOTIFY_SOCKET"], exc)
        return False
    return True

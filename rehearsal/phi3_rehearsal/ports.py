"""A free TCP port on the loopback interface, for the servers the rehearsal, the tests and the
benchmarks start on this machine."""

from __future__ import annotations

import socket

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick for port 0); the caller binds it next."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])

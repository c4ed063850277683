"""Evaluators and jobs the Ray checks run on workers (imported there by name, so they live in a
module of their own): each leaves a trace in a file, since a worker's memory is not the
driver's."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
from pathlib import Path

from evalfns import lm_loss

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def lo_up() -> None:
    """Bring the loopback interface up (what `ip link set lo up` does), with one ioctl."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    finally:
        s.close()


def only_loopback() -> bool:
    """True inside a network namespace whose only interface is loopback."""
    return {name for _, name in socket.if_nameindex()} == {"lo"}


def _log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def counted_loss(model, log: str) -> dict[str, float]:
    """lm_loss, and one line in `log` per call (which alphas a rerun really evaluated)."""
    _log(log, f"{float(model.module.state_dict()['model.norm.weight'].double().mean())!r}")
    return lm_loss(model)


def where_loss(model, log: str) -> dict[str, float]:
    """lm_loss, and the Ray node it ran on in `log`."""
    import ray

    _log(log, ray.get_runtime_context().get_node_id())
    return lm_loss(model)


def die_once(model, marker: str) -> dict[str, float]:
    """The first call anywhere SIGKILLs its own worker mid-job (a job killed mid-run); the
    retried job finds the marker and returns lm_loss."""
    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return lm_loss(model)


def square(x: int) -> int:
    return x * x


def boom(x: int) -> int:
    raise RuntimeError(f"boom {x}")


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def setup_worker() -> None:
    """Ray's worker_process_setup_hook: what the driver's tests registered (the tiny CLIP)."""
    from helpers import register_tiny_clip

    register_tiny_clip()

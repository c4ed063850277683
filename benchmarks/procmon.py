"""Run a command and measure it: whole-process wall time, and the peaks of RSS and of
anonymous memory (RssAnon) summed over the process tree, sampled from /proc every few ms."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_S = 0.01


@dataclass(frozen=True)
class Measured:
    """One run: seconds, peak RSS and peak anonymous memory of the tree (bytes), exit code."""

    wall: float
    rss: int
    anon: int
    rc: int
    cpu: float = 0.0  # user + system seconds of the process itself (wait4)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out.extend(int(p) for p in text.split())
    except OSError:
        pass
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _tree(pid: int, parent_cmdline: bytes) -> list[int]:
    """The process and its descendants, leaving out those that have not exec'd yet: a fork
    shares its parent's pages (copy-on-write) and would count them twice, a vfork child shows
    its parent's memory as its own, and either still has its parent's command line (an exec
    in progress shows an empty one)."""
    todo, seen = [(pid, parent_cmdline)], []
    while todo:
        p, parent = todo.pop()
        cmd = _cmdline(p)
        if cmd and cmd != parent:
            seen.append(p)
        todo.extend((c, cmd) for c in _children(p))
    return seen


def _status(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) in bytes; zeros for a process that has gone."""
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss, anon


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Measured:
    """Run `cmd` to completion, sampling its process tree's memory while it runs."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    peak = {"rss": 0, "anon": 0}
    me = _cmdline(os.getpid())
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = anon = 0
            for p in _tree(proc.pid, me):
                r, a = _status(p)
                rss, anon = rss + r, anon + a
            peak["rss"], peak["anon"] = max(peak["rss"], rss), max(peak["anon"], anon)
            done.wait(SAMPLE_S)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if log:
        out.close()  # type: ignore[union-attr]
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(wall, peak["rss"], peak["anon"], proc.returncode, cpu)

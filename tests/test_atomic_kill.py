"""A SIGKILL at any moment of `sgmerge interpolate` leaves the destination absent (or, if the
run got to the end first, complete), and the next run removes the dead run's temporary
directory and succeeds."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mergekit_sg.io import TMP_TAG

SGMERGE = [sys.executable, "-m", "mergekit_sg"]
ALPHAS = "0.25,0.5,0.75"
# Fractions of the output bytes written when the kill comes; 0 = as soon as the temporary
# directory exists, 1 = every byte written (hashes, headers, fsync and rename still to come).
KILL_AT = (0.0, 0.5, 1.0)
SHAPE = (2048, 3072)  # 6.3M float32 elements = 25 MB per tensor


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A pair of about 100 MB per model, so that the write takes a moment."""
    root = tmp_path_factory.mktemp("kill-pair")
    g = torch.Generator().manual_seed(0)
    paths = []
    for name, shift in (("pre", 0.0), ("ft", 1.0)):
        d = root / name
        d.mkdir()
        tensors = {f"layers.{i}.weight": torch.randn(SHAPE, generator=g) + shift for i in range(4)}
        save_file(tensors, str(d / "model.safetensors"))
        paths.append(d)
    return paths[0], paths[1]


def _tmp_dirs(dest: Path, pid: int | None = None) -> list[Path]:
    """Temporary directories of runs writing `dest` (of the run `pid` only, if given)."""
    tag = f".{dest.name}{TMP_TAG}{'' if pid is None else f'{pid}-'}*"
    return sorted(dest.parent.glob(tag))


def _written(dest: Path, pid: int) -> int:
    """Bytes allocated so far in the run's temporary shard files (they are sparse at first)."""
    total = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for d in _tmp_dirs(dest, pid):
            for f in d.rglob("*.safetensors"):
                with contextlib.suppress(FileNotFoundError):
                    total += f.stat().st_blocks * 512
    return total


def _start(pre: Path, ft: Path, dest: Path) -> subprocess.Popen:
    cmd = [*SGMERGE, "interpolate", str(pre), str(ft), "--alpha", ALPHAS, "-o", str(dest), "-q"]
    # --max-shard-size makes several files per output
    cmd += ["--max-shard-size", "60MB"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, dest: Path, fraction: float, total: int) -> bool:
    """SIGKILL once the temporary directory exists and `fraction` of the bytes are written;
    False if the run finished before that."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _tmp_dirs(dest, proc.pid) and _written(dest, proc.pid) >= fraction * total:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    proc.kill()
    raise AssertionError("the run neither progressed nor finished in 120 s")


def _check_output(dest: Path, pre: Path, ft: Path) -> None:
    with (
        safe_open(pre / "model.safetensors", "pt") as a,
        safe_open(ft / "model.safetensors", "pt") as b,
    ):
        ref = {k: (a.get_tensor(k), b.get_tensor(k)) for k in a.keys()}  # noqa: SIM118
    for alpha in (0.25, 0.5, 0.75):
        d = dest / f"alpha-{alpha:g}"
        seen = set()
        for f in d.glob("*.safetensors"):
            with safe_open(f, "pt") as h:
                for k in h.keys():  # noqa: SIM118
                    want = torch.lerp(ref[k][0], ref[k][1], alpha)
                    assert torch.equal(h.get_tensor(k), want), (alpha, k)
                    seen.add(k)
        assert seen == set(ref)


def test_kill_during_write_leaves_nothing_and_next_run_cleans_up(
    big_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    pre, ft = big_pair
    dest = tmp_path / "merged"
    total = 3 * 4 * SHAPE[0] * SHAPE[1] * 4  # three outputs of four float32 tensors
    killed = 0
    for fraction in KILL_AT:
        proc = _start(pre, ft, dest)
        if _kill_when(proc, dest, fraction, total):
            killed += 1
            assert proc.returncode == -signal.SIGKILL
            assert not dest.exists(), f"destination exists after a kill at {fraction:.0%}"
            assert _tmp_dirs(dest, proc.pid), "a SIGKILLed run cannot clean up; its temp dir stays"
        else:  # it got to the end first: the destination is complete, the stale dirs gone
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
            _check_output(dest, pre, ft)
            assert _tmp_dirs(dest) == []
            shutil.rmtree(dest)
    assert killed >= len(KILL_AT) - 1, "the runs finished before they could be killed"
    assert all(not _alive(int(p.name.rsplit("-", 2)[-2])) for p in _tmp_dirs(dest))
    done = subprocess.run(
        [*SGMERGE, "interpolate", str(pre), str(ft), "--alpha", ALPHAS, "-o", str(dest), "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert _tmp_dirs(dest) == [], "the next run must remove the dead runs' temporary dirs"
    _check_output(dest, pre, ft)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

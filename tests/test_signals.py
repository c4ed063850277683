"""Ctrl-C (SIGINT) and SIGTERM at seeded random moments of `sgmerge interpolate`, in real
processes: the run exits 130 or 143 with one line on stderr, leaves no destination and no
temporary folder, a replaced (--force) destination is still the old one, and the next run
writes an output byte-identical to an uninterrupted run's."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mergekit_sg.io.atomic import TMP_TAG

SGMERGE = [sys.executable, "-m", "mergekit_sg"]
SHAPE = (1024, 3072)  # 12.6 MB of float32 per tensor
RNG = random.Random(1313)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sig-pair")
    g = torch.Generator().manual_seed(0)
    out = []
    for name, shift in (("pre", 0.0), ("ft", 1.0)):
        d = root / name
        d.mkdir()
        save_file(
            {f"l.{i}.weight": torch.randn(SHAPE, generator=g) + shift for i in range(4)},
            d / "model.safetensors",
        )
        (d / "config.json").write_text('{"architectures": ["X"]}\n')
        out.append(d)
    return out[0], out[1]


def _cmd(pair: tuple[Path, Path], dest: Path, *extra: str) -> list[str]:
    pre, ft = pair
    return [
        *SGMERGE,
        "interpolate",
        str(pre),
        str(ft),
        "-o",
        str(dest),
        "-q",
        "--alpha",
        "0.25,0.5,0.75",
        "--max-shard-size",
        "30MB",
        *extra,
    ]


def _tmp_dirs(dest: Path) -> list[Path]:
    return [p for p in dest.parent.iterdir() if TMP_TAG in p.name]


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _signal_run(cmd: list[str], dest: Path, sig: int, delay: float) -> subprocess.Popen | None:
    """Start, wait until the temporary folder exists (work has begun), wait `delay` s more,
    send `sig`; None if the run finished first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _tmp_dirs(dest):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.wait()
            return None
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return None
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc


def test_sigint_and_sigterm_exit_130_143_leave_nothing_and_rerun_identical(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    dest = tmp_path / "merged"
    done = subprocess.Popen(_cmd(pair, dest), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not _tmp_dirs(dest) and done.poll() is None:
        time.sleep(0.002)
    t0 = time.monotonic()  # the window a signal can land in: temporary folder to the end
    done.wait()
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr.read() if done.stderr else ""
    reference = _files(dest)
    shutil.rmtree(dest)
    signalled = 0
    kinds = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
    # three signalled runs; a run may beat its signal on a busy box, and the later runs are
    # shorter than the first (the source hashes come from the cache), so a run that beats
    # its signal shortens the window the next delay is drawn from
    for attempt in range(8):
        if signalled == 3:
            break
        sig, code, word = kinds[attempt % 2]
        delay = RNG.uniform(0, 0.6) * took
        proc = _signal_run(_cmd(pair, dest), dest, sig, delay)
        if proc is None or proc.returncode == 0:  # finished before the signal: complete
            assert _files(dest) == reference
            shutil.rmtree(dest)
            took = min(took, delay)
            continue
        signalled += 1
        err = proc.stderr.read() if proc.stderr else ""
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode == code, err
        assert lines == [f"sgmerge: {word}"], err
        assert _tmp_dirs(dest) == []
        if dest.exists():  # the signal came after the output was renamed into place
            assert _files(dest) == reference
            shutil.rmtree(dest)
    assert signalled >= 2, "the runs finished before the signals came"
    again = subprocess.run(_cmd(pair, dest), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert _files(dest) == reference


def test_signal_during_force_replace_keeps_the_old_output(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    dest = tmp_path / "merged"
    dest.mkdir()
    (dest / "old.txt").write_text("the old output")
    proc = _signal_run(_cmd(pair, dest, "--force"), dest, signal.SIGTERM, 0.05)
    if proc is None or proc.returncode == 0:
        pytest.skip("the run finished before the signal")
    assert proc.returncode == 143
    assert _files(dest) == {"old.txt": b"the old output"}
    assert _tmp_dirs(dest) == []

"""Independent jobs and the executors that run them: one interface, two implementations.

A `Job` is a module-level function, its keyword arguments (small: paths, Hub ids, option
values; never tensors) and the resources it asks for. An executor runs a list of jobs and hands
each result to the driver's `on_result` callback as soon as it arrives, so the driver stays the
one writer of results.jsonl and a crash or Ctrl-C loses only the jobs still running.

- `LocalExecutor`: in this process, one job after another (today's behaviour; no Ray import).
- `RayExecutor` (mergekit_sg/ray_jobs.py): every job a Ray task with the job's resources,
  `--ray auto|ADDRESS|local`.

Both retry a job that raises (at most `max_retries` more attempts; Ray also retries a job whose
worker died) and report a job that keeps failing by name with its error, keeping the others'
results. A user error (`SgMergeError`) is not retried: it would fail again the same way.

This module sits at the package root beside errors/options so that every layer (path's scans,
tune's prompt benchmark, commands' recipes and soups) can take an executor; it imports no layer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from mergekit_sg.errors import SgMergeError

DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class Resources:
    """What one job asks a scheduler for: CPUs (also its thread count), GPUs, custom resources."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))


def resources_for(device: str, cpus: int = 1, gpus_available: bool = False) -> Resources:
    """The resources a job's options imply: one GPU for a CUDA job (`auto` counts as CUDA when
    the cluster has GPUs), otherwise `cpus` CPUs; a GPU job still gets one CPU to drive it."""
    cuda = device.startswith("cuda") or (device == "auto" and gpus_available)
    return Resources(num_cpus=1.0, num_gpus=1.0) if cuda else Resources(num_cpus=float(cpus))


def worker_device(device: str) -> str:
    """A job's device on its worker: Ray gives a GPU job exactly one visible GPU, so cuda:N is
    that one (`cuda`); `auto` and cpu are resolved there."""
    return "cuda" if device.startswith("cuda") else device


@dataclass(frozen=True)
class Job:
    """One independent piece of work: `fn(**kwargs)` with `resources`; `name` identifies it in
    progress lines and failure reports."""

    name: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    resources: Resources = Resources()


@dataclass(frozen=True)
class JobFailure:
    name: str
    error: str
    attempts: int


class JobsFailed(SgMergeError):
    """Some jobs kept failing; the others' results were kept (and recorded by the driver)."""

    def __init__(self, failures: list[JobFailure], done: int) -> None:
        self.failures = failures
        names = "; ".join(f"{f.name} ({f.attempts} attempts): {f.error}" for f in failures)
        super().__init__(
            f"{len(failures)} job(s) failed, {done} done and kept; rerun to retry them: {names}"
        )


class JobBoard:
    """Progress of a batch on the driver: jobs done / running / failed, with an ETA from the
    mean wall time per finished job, ETA = elapsed / done * (total - done)."""

    def __init__(self, total: int, label: str = "jobs", stream: TextIO | None = None) -> None:
        self.total, self.label = total, label
        self.done = self.failed = self.running = 0
        self.stream = stream
        self.t0 = time.monotonic()

    def eta(self) -> float | None:
        finished = self.done + self.failed
        if not finished:
            return None
        return (time.monotonic() - self.t0) / finished * (self.total - finished)

    def line(self) -> str:
        eta = self.eta()
        shown = "?" if eta is None else f"{eta:.0f}s"
        return (
            f"{self.label}: {self.done}/{self.total} done, {self.running} running, "
            f"{self.failed} failed, ETA {shown}"
        )

    def update(self, running: int, done: int = 0, failed: int = 0) -> None:
        self.running = running
        self.done += done
        self.failed += failed
        if self.stream is not None:
            print(self.line(), file=self.stream, flush=True)


def job_board(total: int, label: str, quiet: bool) -> JobBoard:
    return JobBoard(total, label, None if quiet else sys.stderr)


OnResult = Callable[[Job, Any], None]


class Executor(Protocol):
    """Runs independent jobs; `on_result(job, value)` is called on the driver, in completion
    order. Returns the jobs that kept failing (the others have all been handed over)."""

    name: str
    max_retries: int

    def slots(self, resources: Resources) -> int: ...

    def gpus_available(self) -> bool: ...

    def run(
        self, jobs: Sequence[Job], on_result: OnResult, board: JobBoard | None = None
    ) -> list[JobFailure]: ...


def error_text(e: BaseException) -> str:
    """One line: the exception's type and message."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[-1] if msg else ''}".strip()


class LocalExecutor:
    """In this process, one job after another: the default, with nothing to install."""

    name = "local"

    def __init__(self, max_retries: int = DEFAULT_RETRIES) -> None:
        self.max_retries = max_retries

    def slots(self, resources: Resources) -> int:
        return 1

    def gpus_available(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def run(
        self, jobs: Sequence[Job], on_result: OnResult, board: JobBoard | None = None
    ) -> list[JobFailure]:
        board = board or JobBoard(len(jobs))
        failures = []
        for job in jobs:
            board.update(running=1)
            for attempt in range(1, self.max_retries + 2):
                try:
                    value = job.fn(**job.kwargs)
                except SgMergeError:
                    raise
                except Exception as e:
                    if attempt <= self.max_retries:
                        continue
                    failures.append(JobFailure(job.name, error_text(e), attempt))
                    board.update(running=0, failed=1)
                else:
                    on_result(job, value)
                    board.update(running=0, done=1)
                break
        return failures


def run_jobs(
    executor: Executor, jobs: Sequence[Job], on_result: OnResult, board: JobBoard | None = None
) -> None:
    """Run the jobs; raise `JobsFailed` (a one-line user-facing error) if some kept failing,
    after the others' results were all handed to `on_result`."""
    failures = executor.run(jobs, on_result, board)
    if failures:
        raise JobsFailed(failures, len(jobs) - len(failures))

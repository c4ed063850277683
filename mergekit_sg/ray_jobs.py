"""The Ray executor: every job a Ray task asking for the job's resources (`num_gpus=1` for a CUDA
job, CPUs otherwise), so Ray places the jobs over the cluster's GPUs and CPUs. Only small
arguments travel (paths, Hub ids, option values): the workers read checkpoints and data from
their path or Hub id themselves, so nothing large goes through the object store.

Retries: a worker that dies mid-job (killed, out of memory, node lost) is retried by Ray itself
(`max_retries`); a job that raises is resubmitted by the driver up to `max_retries` times, except
for a user error (`SgMergeError`), which would fail again the same way. Ctrl-C on the driver
cancels the jobs still queued or running; whatever the driver recorded stays recorded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from mergekit_sg.errors import SgMergeError
from mergekit_sg.jobs import (
    DEFAULT_RETRIES,
    Job,
    JobBoard,
    JobFailure,
    OnResult,
    Resources,
    error_text,
)


def _run_job(fn: Any, kwargs: dict[str, Any], threads: int) -> Any:
    """On the worker: the job with as many threads as CPUs it asked for (torch is not imported
    for a job that does not use it; it reads OMP_NUM_THREADS when it is)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return fn(**kwargs)


def connect(address: str) -> None:
    """Join the cluster `address` names (`auto`: the one `ray start` started on this machine;
    `local`: a private one started here), unless this process is connected already."""
    try:
        import ray
    except ImportError:
        raise SgMergeError("--ray needs Ray: pip install 'mergekit-sg[ray]'") from None
    if ray.is_initialized():
        return
    try:
        if address == "local":
            ray.init(include_dashboard=False, logging_level="warning")
        else:
            ray.init(address=address, logging_level="warning")
    except ConnectionError as e:
        raise SgMergeError(
            f"--ray {address}: no Ray cluster there ({error_text(e)}); start one with "
            "`ray start --head`, or use --ray local"
        ) from None


class RayExecutor:
    """Independent jobs as Ray tasks on the cluster `address` names."""

    name = "ray"

    def __init__(self, address: str = "auto", max_retries: int = DEFAULT_RETRIES) -> None:
        connect(address)
        self.address = address
        self.max_retries = max_retries

    def _resources(self) -> dict[str, float]:
        import ray

        return dict(ray.cluster_resources())

    def slots(self, resources: Resources) -> int:
        """How many such jobs the cluster can run at once."""
        have = self._resources()
        counts = []
        if resources.num_gpus:
            counts.append(have.get("GPU", 0.0) / resources.num_gpus)
        if resources.num_cpus:
            counts.append(have.get("CPU", 0.0) / resources.num_cpus)
        for k, v in resources.custom.items():
            counts.append(have.get(k, 0.0) / v)
        return max(1, int(min(counts))) if counts else 1

    def gpus_available(self) -> bool:
        return self._resources().get("GPU", 0.0) > 0

    def _submit(self, job: Job) -> Any:
        import ray

        r = job.resources
        task = ray.remote(_run_job).options(
            name=job.name,
            num_cpus=r.num_cpus,
            num_gpus=r.num_gpus,
            resources=dict(r.custom) or None,
            max_retries=self.max_retries,  # worker deaths
            retry_exceptions=False,  # raised errors: resubmitted below, user errors not at all
        )
        return task.remote(job.fn, job.kwargs, r.threads)

    def run(
        self, jobs: Sequence[Job], on_result: OnResult, board: JobBoard | None = None
    ) -> list[JobFailure]:
        import ray
        from ray.exceptions import RayTaskError

        board = board or JobBoard(len(jobs))
        slots = self.slots(jobs[0].resources) if jobs else 1
        pending: dict[Any, tuple[Job, int]] = {self._submit(j): (j, 1) for j in jobs}
        failures: list[JobFailure] = []
        board.update(running=min(slots, len(pending)))
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                job, attempt = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except RayTaskError as e:
                    cause = e.cause if isinstance(e.cause, BaseException) else e
                    if not isinstance(cause, SgMergeError) and attempt <= self.max_retries:
                        pending[self._submit(job)] = (job, attempt + 1)
                        continue
                    failures.append(JobFailure(job.name, error_text(cause), attempt))
                    board.update(running=min(slots, len(pending)), failed=1)
                except ray.exceptions.RayError as e:  # the worker kept dying
                    failures.append(JobFailure(job.name, error_text(e), self.max_retries + 1))
                    board.update(running=min(slots, len(pending)), failed=1)
                else:
                    on_result(job, value)
                    board.update(running=min(slots, len(pending)), done=1)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return failures

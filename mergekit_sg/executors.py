"""Choose the executor a command's `--ray` option names: the local one (no Ray import) or the
Ray one (mergekit_sg/ray_jobs.py, imported only when asked for)."""

from __future__ import annotations

from mergekit_sg.jobs import DEFAULT_RETRIES, Executor, LocalExecutor


def make_executor(ray: str | None, max_retries: int = DEFAULT_RETRIES) -> Executor:
    """`None`: the local executor. Otherwise Ray: `auto` (the running cluster, as after
    `ray start --head`), `local` (start a private one-machine Ray here) or an ADDRESS
    (`HOST:PORT` or `ray://HOST:PORT`). Ray is imported only here, only when asked for."""
    if ray is None:
        return LocalExecutor(max_retries)
    from mergekit_sg.ray_jobs import RayExecutor

    return RayExecutor(ray, max_retries)

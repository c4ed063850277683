"""`push`: upload a finished output folder to a Hub model repo in one commit; its summary lines
and its recipe command."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.hub import PushOptions, PushResult, push_folder

__all__ = [
    "RECIPE",
    "PushOptions",
    "PushResult",
    "push_folder",
    "push_headline",
    "push_lines",
    "push_output",
]


def push_output(out: Path, repo_id: str, private: bool, message: str) -> PushResult:
    """Push a finished output; a failure says the output is intact and how to retry."""
    try:
        return push_folder(out, repo_id, private=private, commit_message=message)
    except SgMergeError as e:
        raise SgMergeError(
            f"{e} (the output is complete in {out}; retry with: sgmerge push {out} {repo_id})"
        ) from None


def push_lines(res: PushResult) -> list[str]:
    """What a push did, or for a dry run would do (file by file), in plain lines."""
    where = f"{res.repo_id} ({res.revision})"
    if res.dry_run:
        lines = [f"  {f.path_in_repo} ({f.size:,} bytes)" for f in res.files]
        head = f"would push {len(res.files)} files ({res.total_bytes:,} bytes) to {where}"
        return [head, *lines, "dry run: nothing sent"]
    return [push_headline(res, f"{res.sent_bytes:,} bytes"), f"commit: {res.commit_url}"]


def push_headline(res: PushResult, size: str) -> str:
    """What a push did in one line: files sent in one commit and files already there, or
    that nothing needed sending (`size`: the bytes sent, as the caller writes sizes)."""
    where = f"{res.repo_id} ({res.revision})"
    same = len(res.unchanged)
    if not res.sent:
        return f"nothing to push: {_files(same)} already up to date on {where} (no new commit)"
    head = f"pushed {_files(len(res.sent))} ({size}) to {where} in one commit"
    return f"{head}, {same} unchanged" if same else head


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _push_recipe(
    inputs: dict[str, str], out: Path | None, options: PushOptions, ctx: RecipeContext
) -> RecipeResult:
    res = push_folder(inputs["folder"], inputs["repo_id"], **options.model_dump())
    return RecipeResult(outputs=[], lines=push_lines(res))


RECIPE = recipe_command(
    "push",
    PushOptions,
    _push_recipe,
    inputs=("folder", "repo_id"),
    needs_out=False,
    targets=("repo_id",),
    help="Upload a folder to a Hub model repo in one commit (dry_run: list it, send nothing).",
)

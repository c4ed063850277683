"""`sgmerge push OUT REPO_ID`: upload an output folder to the Hub in one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mergekit_sg.cli.common import console, human_bytes
from mergekit_sg.hub import PushResult, push_folder


def print_push(res: PushResult) -> None:
    """A dry run lists the files with sizes; a push prints the commit URL."""
    if res.dry_run:
        t = Table("file", "size", title=f"would push to {res.repo_id} ({res.revision})")
        for f in res.files:
            t.add_row(f.path_in_repo, human_bytes(f.size))
        console.print(t)
        console.print(
            f"{len(res.files)} files, {human_bytes(res.total_bytes)} (dry run: nothing sent)"
        )
        return
    console.print(
        f"pushed {len(res.files)} files ({human_bytes(res.total_bytes)}) to {res.repo_id} "
        f"({res.revision}) in one commit"
    )
    console.print(f"commit: {res.commit_url}", soft_wrap=True, highlight=False)


def push_cmd(
    out: Annotated[Path, typer.Argument(help="The output folder to upload.")],
    repo_id: Annotated[str, typer.Argument(help="Hub model repo, org/name (created if needed).")],
    revision: Annotated[str, typer.Option("--revision", help="Branch to commit to.")] = "main",
    commit_message: Annotated[
        str | None, typer.Option("--commit-message", help="Commit title.")
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the repo as private if it is new.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be uploaded; send nothing.")
    ] = False,
) -> None:
    """Upload OUT to the Hub repo REPO_ID in one commit (repo created if needed).

    The token comes from HF_TOKEN or the saved login (`hf auth login`); it is never printed or
    written anywhere."""
    res = push_folder(
        out,
        repo_id,
        revision=revision,
        commit_message=commit_message,
        private=private,
        dry_run=dry_run,
    )
    print_push(res)

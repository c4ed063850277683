"""`sgmerge push FOLDER REPO_ID`: upload an output folder to the Hub in one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mergekit_sg.cli.common import console
from mergekit_sg.cli.flags import with_options
from mergekit_sg.commands.format import human_bytes
from mergekit_sg.commands.push import PushOptions, PushResult, push_folder, push_headline


def print_push(res: PushResult) -> None:
    """A dry run lists the files with sizes; a push says what it sent and what was already
    there, and prints the commit URL (the branch's head when nothing was sent)."""
    if res.dry_run:
        t = Table("file", "size", title=f"would push to {res.repo_id} ({res.revision})")
        for f in res.files:
            t.add_row(f.path_in_repo, human_bytes(f.size))
        console.print(t)
        console.print(
            f"{len(res.files)} files, {human_bytes(res.total_bytes)} (dry run: nothing sent)"
        )
        return
    console.print(push_headline(res, human_bytes(res.sent_bytes)), soft_wrap=True)
    console.print(f"commit: {res.commit_url}", soft_wrap=True, highlight=False)


@with_options(PushOptions)
def push_cmd(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="The output folder to upload.")],
    repo_id: Annotated[
        str, typer.Argument(metavar="REPO_ID", help="Hub model repo, org/name (created if needed).")
    ],
    *,
    options: PushOptions,
) -> None:
    """Upload FOLDER to the Hub repo REPO_ID in one commit (repo created if needed); files
    already on the branch unchanged are not sent again.

    The token comes from HF_TOKEN or the saved login (`hf auth login`); it is never printed or
    written anywhere."""
    res = push_folder(folder, repo_id, **options.model_dump())
    print_push(res)

"""Commands as workflows shared by the CLI and recipes: the library call, then the Hub push when
one is asked for, which runs only after the output is complete, never after a failed merge.
Each workflow is registered as a recipe command here."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.errors import SgMergeError
from mergekit_sg.hub import PushResult, preflight, push_folder
from mergekit_sg.io.card import CardExtras
from mergekit_sg.merge.interpolate import InterpolateResult, interpolate
from mergekit_sg.merge.options import InterpolateOptions
from mergekit_sg.progress import Progress
from mergekit_sg.recipe import RecipeContext, RecipeResult, register_recipe_command


def push_output(out: Path, repo_id: str, private: bool, message: str) -> PushResult:
    """Push a finished output; a failure says the output is intact and how to retry."""
    try:
        return push_folder(out, repo_id, private=private, commit_message=message)
    except SgMergeError as e:
        raise SgMergeError(
            f"{e} (the output is complete in {out}; retry with: sgmerge push {out} {repo_id})"
        ) from None


def interpolate_and_push(
    pretrained: str | Path,
    finetuned: str | Path,
    out: str | Path,
    options: InterpolateOptions,
    progress: Progress | None = None,
    command: str | None = None,
    extras: CardExtras | None = None,
) -> tuple[InterpolateResult, PushResult | None]:
    """`interpolate`, then `--push-to-hub` of its output. The repo id and the token are checked
    before the merge starts, so a long merge does not end in a missing login."""
    repo = options.push_to_hub
    if repo:
        if len(options.alpha) > 1:
            raise SgMergeError(
                "--push-to-hub pushes one model: give one --alpha, or push one of OUT/alpha-A "
                "with `sgmerge push`"
            )
        preflight(repo)
    elif options.private:
        raise SgMergeError("--private needs --push-to-hub REPO")
    res = interpolate(
        pretrained, finetuned, out, options, progress=progress, command=command, extras=extras
    )
    if not repo:
        return res, None
    alpha = options.alpha[0]
    return res, push_output(res.out, repo, options.private, f"WiSE-FT merge, alpha={alpha:g}")


def _interpolate_recipe(
    inputs: dict[str, str], out: Path | None, options: InterpolateOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res, push = interpolate_and_push(
        inputs["pretrained"],
        inputs["finetuned"],
        out,
        options,
        progress=ctx.progress,
        command=ctx.command_line,
        extras=CardExtras(recipe_yaml=ctx.recipe_yaml, recipe_source=ctx.source_name),
    )
    lines = [f"alpha={a:g} -> {p}" for a, p in res.outputs.items()]
    if push is not None:
        lines.append(f"pushed {len(push.files)} files to {push.repo_id}: {push.commit_url}")
    return RecipeResult(outputs=list(res.outputs.values()), lines=lines)


register_recipe_command(
    "interpolate",
    InterpolateOptions,
    _interpolate_recipe,
    inputs=("pretrained", "finetuned"),
    help="WiSE-FT: theta = (1 - alpha) * pretrained + alpha * finetuned, to `out`.",
)

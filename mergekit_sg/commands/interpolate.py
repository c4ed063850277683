"""`interpolate`: the WiSE-FT merge (an open_clip classifier's head included), then the Hub push
when one is asked for, which runs only after the output is complete, never after a failed
merge; its summary lines and its recipe command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mergekit_sg.commands.format import human_bytes
from mergekit_sg.commands.push import push_headline, push_output
from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.card import CardExtras
from mergekit_sg.io.hub import PushResult, preflight
from mergekit_sg.io.progress import Progress
from mergekit_sg.merge.options import InterpolateOptions

if TYPE_CHECKING:
    from mergekit_sg.merge.interpolate import InterpolateResult

# The merge itself (models.clip_classifier, merge.interpolate: torch) is imported where it
# runs: `sgmerge interpolate --help` needs only the options model, and answers without torch.

__all__ = [
    "RECIPE",
    "InterpolateOptions",
    "interpolate_and_push",
    "summary_lines",
]


def interpolate_and_push(
    pretrained: str | Path,
    finetuned: str | Path,
    out: str | Path,
    options: InterpolateOptions,
    progress: Progress | None = None,
    command: str | None = None,
    extras: CardExtras | None = None,
) -> tuple[InterpolateResult, PushResult | None]:
    """`interpolate` (an open_clip classifier's head included), then `--push-to-hub` of its
    output. The repo id and the token are checked
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
    from mergekit_sg.models.clip_classifier import interpolate_with_head

    res = interpolate_with_head(
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
        lines.append(f"{push_headline(push, f'{push.sent_bytes:,} bytes')}: {push.commit_url}")
    return RecipeResult(outputs=list(res.outputs.values()), lines=lines)


RECIPE = recipe_command(
    "interpolate",
    InterpolateOptions,
    _interpolate_recipe,
    inputs=("pretrained", "finetuned"),
    help="WiSE-FT: theta = (1 - alpha) * pretrained + alpha * finetuned, to `out`.",
)


def summary_lines(res: InterpolateResult, seconds: float) -> list[str]:
    """What `sgmerge interpolate` prints: each output, then tensors, bytes and time."""
    from mergekit_sg.io.dtypes import itemsize

    n = len(res.plan.entries)
    nbytes = sum(e.numel * itemsize(e.out_dtype) for e in res.plan.entries)
    copied = sum(1 for e in res.plan.entries if e.rule.kind == "copy")
    lines = [f"alpha={alpha:g} -> [bold]{path}[/]" for alpha, path in res.outputs.items()]
    lines.append(
        f"{n} tensors ({copied} copied), {human_bytes(nbytes)} per output, "
        f"{len(res.outputs)} output(s) in {seconds:.1f} s"
    )
    return lines

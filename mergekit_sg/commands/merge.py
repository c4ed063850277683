"""`merge`: a mergekit YAML config (any method of merge/methods) streamed to safetensors, with
coefficient grids (`--param NAME=V1,V2,...` or `NAME=START:STOP:STEP`) written to `OUT/NAME-V`
from one read of the inputs; its options model (CLI flags, Python kwargs, recipe keys), summary
lines and recipe command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from mergekit_sg.commands.format import human_bytes
from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.progress import Progress
from mergekit_sg.merge.mergekit_config import MergeSpec
from mergekit_sg.merge.options import RunOptions
from mergekit_sg.options import build_options

if TYPE_CHECKING:
    from mergekit_sg.merge.merge import MergeResult

# The merge itself (merge.merge, torch) is imported where it runs: `sgmerge merge --help`
# needs only the options model here, and answers without importing torch.

__all__ = [
    "RECIPE",
    "MergeOptions",
    "MergeRecipeOptions",
    "merge_command",
    "run_options",
    "summary_lines",
]


class MergeOptions(RunOptions):
    """sgmerge merge CONFIG -o OUT: how to run a mergekit config, and its coefficient grid."""

    param: list[str] = Field(
        default=[],
        description="NAME=V1,V2,... or NAME=START:STOP:STEP: one output per value, written to "
        "OUT/NAME-V from one read of the inputs (repeatable: every combination).",
    )
    dtype: Literal["float32", "float16", "bfloat16", "float64"] | None = Field(
        default=None, description="Output dtype of floating tensors (default: the config's)."
    )


class MergeRecipeOptions(MergeOptions):
    """The `merge` recipe command: MergeOptions plus the config itself (a path to a mergekit
    YAML file, or its keys inline), checked when the recipe is read (and by --dry-run)."""

    config: str | dict[str, Any] = Field(
        description="The mergekit config: a YAML file, or its keys (merge_method, models, ...)."
    )

    @model_validator(mode="after")
    def _check_config(self) -> MergeRecipeOptions:
        from mergekit_sg.merge.merge import check_config, parse_grid

        try:
            check_config(self.config, parse_grid(self.param))
        except SgMergeError as e:
            raise ValueError(str(e)) from None
        return self


def run_options(opts: RunOptions) -> RunOptions:
    """The RunOptions part of a command's options (merge's own keys left out)."""
    return RunOptions(**{k: getattr(opts, k) for k in RunOptions.model_fields})


def merge_command(
    config: str | Path | dict[str, Any] | MergeSpec,
    out: str | Path,
    options: MergeOptions | None = None,
    progress: Progress | None = None,
    **kwargs: Any,
) -> MergeResult:
    """`sgmerge merge`: the config merged into `out`, or one output per grid point into
    `out/NAME-V`; `--dtype` replaces the config's output dtype."""
    from mergekit_sg.merge.merge import as_spec, check_config, merge, parse_grid

    opts: MergeOptions = build_options(MergeOptions, options, kwargs)
    grid = parse_grid(opts.param)
    spec = as_spec(config)
    check_config(spec, grid)
    if opts.dtype:
        spec = spec.model_copy(update={"out_dtype": opts.dtype})
    return merge(spec, out, grid=grid or None, run=run_options(opts), progress=progress)


def summary_lines(res: MergeResult, seconds: float) -> list[str]:
    """What `sgmerge merge` prints: each output, then tensors, bytes and time."""
    from mergekit_sg.io.dtypes import itemsize

    es = res.plan.entries
    nbytes = sum(e.numel * itemsize(e.out_dtype) for e in es)
    copied = sum(1 for e in es if e.params is None)
    lines = [
        f"{label or res.plan.method.name} -> [bold]{path}[/]" for label, path in res.outputs.items()
    ]
    lines.append(
        f"{res.plan.method.name}: {len(es)} tensors ({copied} copied), {human_bytes(nbytes)} "
        f"per output, {len(res.outputs)} output(s) in {seconds:.1f} s"
    )
    return lines


def _merge_recipe(
    inputs: dict[str, str], out: Path | None, options: MergeRecipeOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    opts = MergeOptions(**{k: getattr(options, k) for k in MergeOptions.model_fields})
    res = merge_command(options.config, out, opts, progress=ctx.progress)
    lines = [f"{label or res.plan.method.name} -> {p}" for label, p in res.outputs.items()]
    return RecipeResult(outputs=[res.out], lines=lines)


RECIPE = recipe_command(
    "merge",
    MergeRecipeOptions,
    _merge_recipe,
    help="Any merge method from a mergekit config (options.config), grids with options.param.",
)

"""Options models from keyword arguments, an existing model, or both, with pydantic's errors
turned into one line naming the flag: the one place the CLI, the Python API and recipes
validate their options. Beyond each model's own rules, every float anywhere in the options
must be finite (NaN or infinity is never a usable coefficient, rate or scale), and every
`device` field must name a device this machine has, so both fail before any work."""

from __future__ import annotations

import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mergekit_sg.device import check_device
from mergekit_sg.errors import SgMergeError

M = TypeVar("M", bound=BaseModel)


def build_options(model: type[M], options: BaseModel | None, kwargs: dict[str, Any]) -> M:
    """`model` validated from `options` updated with `kwargs` (every value is validated, the
    given model's too); an error is one SgMergeError line such as `--alpha: ...`."""
    try:
        base = options.model_dump() if options is not None else {}
        built = model.model_validate({**base, **kwargs})
    except ValidationError as e:
        missing = [
            _flag(".".join(str(p) for p in x["loc"])) for x in e.errors() if x["type"] == "missing"
        ]
        if missing:  # every required option at once, not one per try
            what = "option" if len(missing) == 1 else "options"
            raise SgMergeError(f"missing required {what}: {', '.join(missing)}") from None
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        where = f"--{loc.replace('_', '-')}: " if loc else ""
        raise SgMergeError(f"{where}{err['msg'].removeprefix('Value error, ')}") from None
    check_finite(built)
    device = getattr(built, "device", None)
    if isinstance(device, str):
        check_device(device)
    return built


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_finite(options: BaseModel) -> None:
    """Refuse NaN and infinities in any float field (also inside lists and nested models)."""

    def walk(value: object, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise SgMergeError(f"{where}: must be a finite number, not {value}")
        if isinstance(value, (list, tuple)):
            for v in value:
                walk(v, where)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v, where)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), _flag(name))

    walk(options, "options")

"""One pydantic options model drives the CLI flags: each field becomes a typer option with the
field's description as help, and the parsed values are validated by the same model."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel

from mergekit_sg.options import build_options


def _unwrap_optional(ann: Any) -> Any:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


_METAVAR = {int: "INT", float: "FLOAT", str: "TEXT"}


def _help(field: Any, shown: Any) -> str:
    """The field's description, then `[default: X]` (when it has one worth showing) or
    `[required]`: every default visible, in the help's plain words."""
    text = field.description or ""
    if field.is_required():
        return f"{text}  [required]"
    if isinstance(shown, bool) or shown is None or shown == []:
        return text
    if isinstance(shown, list):
        shown = ",".join(str(v) for v in shown)
    return f"{text}  [default: {shown}]"


def _option(name: str, field: Any) -> inspect.Parameter:
    ann = _unwrap_optional(field.annotation)
    flag = "--" + name.replace("_", "-")
    origin = typing.get_origin(ann)
    if ann is bool:
        default = bool(field.default)
        decls = [f"{flag}/--no-{flag[2:]}"] if default else [flag]
        help_ = (field.description or "") + ("  [default: on]" if default else "")
        return _param(name, bool, typer.Option(*decls, help=help_, show_default=False), default)
    help_ = _help(field, field.default)
    if origin is list:
        inner = typing.get_args(ann)[0] if typing.get_args(ann) else str
        meta = _METAVAR.get(inner, "TEXT")
        if inner in (int, float):  # a comma list or START:STOP:STEP ranges (mergekit_sg.alphas)
            meta = "VALUES"
        if typing.get_origin(inner) is Literal:  # a comma list of names: --report-to a,b
            meta = ",".join(str(a) for a in typing.get_args(inner))
        return _param(
            name,
            list[str] | None,
            typer.Option(flag, help=help_, metavar=meta, show_default=False),
        )
    if origin is Literal:
        return _param(name, ann | None, typer.Option(flag, help=help_, show_default=False))
    py = ann if ann in (int, float, str) else str
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    meta = str(extra.get("metavar", _METAVAR[py]))  # e.g. VALUES for an alpha grid given as text
    return _param(
        name,
        py | None,
        typer.Option(flag, help=help_, metavar=meta, show_default=False),
    )


def _param(name: str, ann: Any, opt: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[ann, opt]
    )


def with_options(
    model: type[BaseModel], only: tuple[str, ...] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command taking `options: model` so typer shows the model's fields as flags
    (`only`: just these fields, for a command that uses a part of a shared model)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in sig.parameters.values()
            if p.name != "options"
        ]
        fields = {n: f for n, f in model.model_fields.items() if only is None or n in only}
        extra = [_option(n, f) for n, f in fields.items()]

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            given = {}
            for n, f in fields.items():
                v = kwargs.pop(n)
                if v is None or (isinstance(v, list) and not v):
                    continue
                if typing.get_origin(_unwrap_optional(f.annotation)) is bool or v != f.default:
                    given[n] = v
            return fn(options=build_options(model, None, given), **kwargs)

        params = own + extra
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the new signature, not fn's
        return wrapper

    return deco

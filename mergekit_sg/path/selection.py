"""Best-alpha selection rules: max harmonic mean, or maximise one side subject to a floor on
the other (absolute, or relative to the endpoint that is best at it: '0.98x' or '98%')."""

from __future__ import annotations

from dataclasses import dataclass

from mergekit_sg.errors import SgMergeError
from mergekit_sg.path.options import Rule
from mergekit_sg.path.walk import ScanResult


@dataclass(frozen=True)
class Selection:
    alpha: float
    rule: str
    reason: str


def parse_floor(text: str | float | None, reference: float | None, what: str) -> float | None:
    """'0.7' absolute; '0.98x' or '98%' relative to `reference` (the endpoint's value)."""
    if text is None:
        return None
    s = str(text).strip()
    try:
        if s.endswith(("x", "%")):
            frac = float(s[:-1]) / (100.0 if s.endswith("%") else 1.0)
            if reference is None:
                raise SgMergeError(f"--min-{what} {s}: the reference endpoint has no {what} score")
            return frac * reference if reference >= 0 else reference / frac
        return float(s)
    except ValueError:
        raise SgMergeError(f"--min-{what} {s!r}: write a number, 0.98x or 98%") from None


def select(
    result: ScanResult,
    rule: Rule = "max-hm",
    min_speciality: str | float | None = None,
    min_generality: str | float | None = None,
) -> Selection:
    """The alpha the rule picks; ties go to the smaller alpha (closer to the pretrained model)."""
    pts = sorted(result.points, key=lambda p: p.alpha)
    ft, pre = result.at(1.0), result.at(0.0)
    s_floor = parse_floor(min_speciality, result.score(ft, "speciality"), "speciality")
    g_floor = parse_floor(min_generality, result.score(pre, "generality"), "generality")

    def ok(p: object) -> bool:
        s, g = result.score(p, "speciality"), result.score(p, "generality")  # type: ignore[arg-type]
        return (s_floor is None or (s is not None and s >= s_floor - 1e-12)) and (
            g_floor is None or (g is not None and g >= g_floor - 1e-12)
        )

    cands = [p for p in pts if ok(p)]
    if not cands:
        raise SgMergeError(
            f"no alpha meets the floors (speciality >= {s_floor}, generality >= {g_floor}); "
            "lower --min-speciality/--min-generality"
        )
    key = {
        "max-hm": result.hm,
        "max-generality": lambda p: result.score(p, "generality"),
        "max-speciality": lambda p: result.score(p, "speciality"),
    }[rule]
    scored = [(key(p), p) for p in cands if key(p) is not None]
    if not scored:
        need = "positive speciality and generality" if rule == "max-hm" else rule.split("-")[1]
        raise SgMergeError(f"--select {rule}: the scan has no {need} scores to select on")
    best = max(v for v, _ in scored)
    chosen = next(p for v, p in scored if v == best)
    floors = [
        f"speciality >= {s_floor:.4g}" if s_floor is not None else "",
        f"generality >= {g_floor:.4g}" if g_floor is not None else "",
    ]
    cond = " and ".join(f for f in floors if f)
    reason = f"{rule} = {best:.4g} at alpha={chosen.alpha:g}" + (
        f" subject to {cond}" if cond else ""
    )
    return Selection(chosen.alpha, rule, reason)

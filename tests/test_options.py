"""The one options builder behind the CLI flags, the Python keyword arguments and recipes."""

from __future__ import annotations

import pytest

from mergekit_sg.errors import SgMergeError
from mergekit_sg.merge import InterpolateOptions
from mergekit_sg.options import build_options


def test_kwargs_update_a_given_model_and_are_validated() -> None:
    base = build_options(InterpolateOptions, None, {"alpha": [0.25], "dtype": "bfloat16"})
    got = build_options(InterpolateOptions, base, {"alpha": [0.5, 0.75]})
    assert got.alpha == (0.5, 0.75) or list(got.alpha) == [0.5, 0.75]
    assert got.dtype == "bfloat16"  # kept from the given model
    assert build_options(InterpolateOptions, base, {}) == base
    with pytest.raises(SgMergeError) as e:  # an update is validated, not copied in blindly
        build_options(InterpolateOptions, base, {"max_shard_size": {"not": "a size"}})
    assert str(e.value).startswith("--max-shard-size: ") and "\n" not in str(e.value)


def test_unknown_option_names_the_flag() -> None:
    with pytest.raises(SgMergeError, match=r"^--alpah: "):
        build_options(InterpolateOptions, None, {"alpah": [0.5]})

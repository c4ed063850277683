"""The executor reads safetensors inputs in place through one private mapping per file (no
pread copy of tensor data on the CPU), lets go of each tensor's mapped pages when its outputs
are written, and falls back to pread where a file cannot be mapped: the same bytes each way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mergekit_sg.io.safetensors_read import SafetensorsFile
from mergekit_sg.merge.merge import merge
from mergekit_sg.merge.methods import native


def _models(root: Path) -> list[Path]:
    g = torch.Generator().manual_seed(3)
    base = {
        "a.w": torch.randn(300, 70, generator=g).to(torch.bfloat16),
        "b.w": torch.randn(1001, generator=g),
        "c.w": torch.randn(64, 33, generator=g).to(torch.bfloat16),
    }
    paths = []
    for i in range(3):
        sd = {
            k: (v.float() + 0.01 * i * torch.randn(v.shape, generator=g)).to(v.dtype)
            for k, v in base.items()
        }
        p = root / f"m{i}.safetensors"
        save_file(sd, p)
        paths.append(p)
    return paths


def _cfg(paths: list[Path], method: str) -> dict:
    return {
        "merge_method": method,
        "base_model": str(paths[0]),
        "models": [
            {"model": str(p), "parameters": {"weight": w, "density": 0.6}}
            for p, w in zip(paths[1:], (1.0, 0.4), strict=True)
        ],
    }


@pytest.mark.parametrize("method", ["ties", "task_arithmetic", "linear"])
def test_in_place_reads_give_the_pread_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    paths = _models(tmp_path)
    cfg = _cfg(paths, method)
    if method == "linear":
        del cfg["base_model"]
        cfg["models"] = [
            {"model": str(p), "parameters": {"weight": w}}
            for p, w in zip(paths, (0.5, 0.3, 0.2), strict=True)
        ]
    preads: list[int] = []
    drops: list[tuple[int, int]] = []
    real_pread, real_drop = SafetensorsFile.pread_into, SafetensorsFile.drop_range

    def pread_spy(self, offset, buf):  # type: ignore[no-untyped-def]
        preads.append(buf.numel())
        return real_pread(self, offset, buf)

    def drop_spy(self, offset, nbytes):  # type: ignore[no-untyped-def]
        drops.append((offset, nbytes))
        return real_drop(self, offset, nbytes)

    populated: list[int] = []
    real_pop = SafetensorsFile.populate_range

    def pop_spy(self, offset, nbytes):  # type: ignore[no-untyped-def]
        populated.append(nbytes)
        return real_pop(self, offset, nbytes)

    monkeypatch.setattr(SafetensorsFile, "pread_into", pread_spy)
    monkeypatch.setattr(SafetensorsFile, "drop_range", drop_spy)
    monkeypatch.setattr(SafetensorsFile, "populate_range", pop_spy)
    a = load_file(merge(cfg, tmp_path / "a", model_card=False).out / "model.safetensors")
    if method != "ties":  # (TIES' statistics of tensors this small take the partition path)
        assert preads == []  # every tensor byte came through the mapping
    assert len(drops) == 3 * 3  # each tensor of each input, once its outputs were written
    # the reader faults pages in for the compute where no check and no statistics pass
    # touch them first (task arithmetic with the kernels); TIES' statistics pass does
    if method == "task_arithmetic" and native.available():
        assert sum(populated) > 0
    if method == "ties":
        assert populated == []
    preads.clear()
    monkeypatch.setattr(SafetensorsFile, "_mapping", lambda self, fd: None)  # cannot map
    b = load_file(merge(cfg, tmp_path / "b", model_card=False).out / "model.safetensors")
    assert sum(preads) > 0  # the fallback read them with pread
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k


def test_a_view_of_a_file_shorter_than_its_header_says_is_refused(tmp_path: Path) -> None:
    p = _models(tmp_path)[0]
    st = SafetensorsFile(p)
    try:
        size = p.stat().st_size
        assert st.view_range(size - 10, 10) is not None
        with open(p, "r+b") as f:
            f.truncate(size - 5)
        assert st.view_range(size - 10, 10) is None  # checked against the file's size now
    finally:
        st.close()

"""io.pages: the buffers O_DIRECT writes come from are aligned, hold what is written to them,
live as long as a view of them, and ask the kernel for huge pages on whole 2 MB units only."""

from __future__ import annotations

import gc
import re
import sys
from pathlib import Path

import pytest
import torch

from mergekit_sg.io.pages import HUGE_PAGE, dma_empty
from mergekit_sg.io.safetensors_write import PLACED_ALIGN
from mergekit_sg.merge.executor import _pool

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str | None:
    """The system's THP mode (always / madvise / never), None where there is no THP."""
    if not sys.platform.startswith("linux") or not THP.exists():
        return None
    m = re.search(r"\[(\w+)\]", THP.read_text())
    return m.group(1) if m else None


def _vma(addr: int) -> dict[str, str] | None:
    """The /proc/self/smaps fields of the mapping holding `addr`, or None."""
    fields: dict[str, str] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            if fields is not None:
                return fields
            lo, hi = int(head.group(1), 16), int(head.group(2), 16)
            fields = {} if lo <= addr < hi else None
        elif fields is not None and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


@pytest.mark.parametrize("nbytes", [1, 4095, 4096, HUGE_PAGE, HUGE_PAGE + 12345, 9 << 20])
@pytest.mark.parametrize("align", [4096, PLACED_ALIGN, HUGE_PAGE])
def test_buffer_is_aligned_sized_and_holds_its_bytes(nbytes: int, align: int) -> None:
    t = dma_empty(nbytes, align)
    assert t.dtype == torch.uint8 and t.numel() == nbytes and t.is_contiguous()
    assert t.data_ptr() % align == 0
    pattern = torch.arange(nbytes, dtype=torch.int64).remainder_(251).to(torch.uint8)
    t.copy_(pattern)
    view = memoryview(t.numpy())  # what the O_DIRECT writer hands to os.pwrite
    assert bytes(view[-3:]) == bytes(pattern[-3:].tolist())
    assert torch.equal(t, pattern)


def test_bad_alignment_is_refused() -> None:
    for align in (3, 3 << 20, HUGE_PAGE * 2):
        with pytest.raises(ValueError, match="alignment"):
            dma_empty(4096, align)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps")
def test_the_mapping_lives_as_long_as_a_view_of_it() -> None:
    t = dma_empty(3 << 20)
    t.fill_(7)
    tail = t[-10:]
    addr = t.data_ptr()
    del t
    gc.collect()
    assert _vma(addr) is not None  # still mapped: the view holds the buffer
    assert tail.tolist() == [7] * 10
    del tail
    gc.collect()
    assert _vma(addr) is None  # unmapped with its last view


@pytest.mark.skipif(_thp_mode() not in ("always", "madvise"), reason="no transparent huge pages")
def test_whole_2mb_units_may_be_huge_and_the_tail_follows_the_system() -> None:
    nbytes = 2 * HUGE_PAGE + 100_000  # two whole units and a small tail
    t = dma_empty(nbytes, PLACED_ALIGN)
    head, tail = _vma(t.data_ptr()), _vma(t.data_ptr() + nbytes - 1)
    assert head is not None and tail is not None
    assert head.get("THPeligible") == "1"
    # the tail is not advised: in `madvise` mode it stays small pages (no 2 MB page for 100 KB)
    assert tail.get("THPeligible") == ("1" if _thp_mode() == "always" else "0")


@pytest.mark.skipif(_thp_mode() not in ("always", "madvise"), reason="no transparent huge pages")
def test_the_executor_writes_from_huge_page_buffers_on_the_cpu() -> None:
    pool = _pool(2, (8 << 20) + 2 * PLACED_ALIGN, False, PLACED_ALIGN)
    while not pool.empty():
        buf = pool.get()
        assert buf.data_ptr() % PLACED_ALIGN == 0
        vma = _vma(buf.data_ptr() + PLACED_ALIGN)
        assert vma is not None and vma.get("THPeligible") == "1"

"""Kernel benchmark of the statistic-step merge methods: the statistics step and the chunked
compute of one synthetic bfloat16 tensor (base + two fine-tunes, density 0.5, weights 1 / 0.5)
on one compute thread, with timings per step (wall, and CPU time, which a loaded machine
inflates less) and a SHA-1 of the output bytes. Run it for two
checkouts alternately to compare them under the same load (same SHA-1 = same bytes):

    for rep in 1 2; do for tree in OLD NEW; do
      PYTHONPATH=$tree .venv/bin/python benchmarks/methods_kernel.py 2048x5632 \\
          ties,dare_ties,breadcrumbs
    done; done
"""

import hashlib
import sys
import time

import torch

from mergekit_sg.merge.methods import ChunkCtx, Params
from mergekit_sg.merge.methods.task_arithmetic import (
    Breadcrumbs,
    BreadcrumbsInput,
    DareShared,
    DareTies,
    GTAShared,
    TaskInput,
    Ties,
    TiesShared,
)

torch.set_num_threads(1)
shape = tuple(int(s) for s in sys.argv[1].split("x"))
meths = sys.argv[2].split(",")
g = torch.Generator().manual_seed(0)
base = torch.randn(shape, generator=g).mul_(0.02).bfloat16().flatten()
xs = [base] + [
    (base.float() + torch.randn(base.shape, generator=g).mul_(2e-3)).bfloat16() for _ in range(2)
]
n = base.numel()


def read(k, s, c):
    return xs[k][s : s + c].to(torch.float32, copy=True)


CH = 1 << 22
for name in meths:
    M = {
        "ties": (Ties, TiesShared, TaskInput),
        "dare_ties": (DareTies, DareShared, TaskInput),
        "breadcrumbs": (Breadcrumbs, GTAShared, BreadcrumbsInput),
    }[name]
    m = M[0]()
    p = Params(M[1](), (None, M[2](weight=1.0, density=0.5), M[2](weight=0.5, density=0.5)))
    ctx = ChunkCtx("t", n, 0, 0)
    t0, c0 = time.perf_counter(), time.process_time()
    st = m.stats(read, ctx, p, 3)
    t1, c1 = time.perf_counter(), time.process_time()
    out = torch.empty(n, dtype=torch.bfloat16)
    for s in range(0, n, CH):
        c = min(CH, n - s)
        m.compute_into(
            out[s : s + c], [x[s : s + c] for x in xs], p, st, ChunkCtx("t", n, s, 0), torch.float32
        )
    t2, c2 = time.perf_counter(), time.process_time()
    digest = hashlib.sha1(out.view(torch.int16).numpy().tobytes()).hexdigest()[:12]
    print(
        f"{name} {shape} stats {t1 - t0:.2f}s compute {t2 - t1:.2f}s  "
        f"ns/elem {(t2 - t0) / n * 1e9:.1f}  cpu: stats {(c1 - c0) / n * 1e9:.1f} "
        f"compute {(c2 - c1) / n * 1e9:.1f} ns/elem  sha {digest}",
        flush=True,
    )

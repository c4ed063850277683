"""Output bytes of the task-vector methods over many configurations, one SHA-1 per case and one
"ALL" digest: run it for two trees and diff, to show a speed change keeps the bytes
(ties, dare_*, breadcrumbs*, task_arithmetic; normalize off, rescale, negative lambda and
weights; bfloat16 with many tied magnitudes and -0.0, float32, float64 compute; three
chunkings, each chunk computed twice as a grid does):

    for t in OLD NEW; do
        PYTHONPATH=$t .venv/bin/python benchmarks/methods_bytes.py > $(basename $t).txt
    done
"""

import hashlib

import torch

from mergekit_sg.merge.methods import ChunkCtx, Params
from mergekit_sg.merge.methods import task_arithmetic as ta

torch.set_num_threads(1)


def inputs(n, seed, dtype, levels):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g).mul_(0.02).to(dtype)
    xs = [base]
    for _ in range(3):
        noise = torch.randint(-levels, levels + 1, (n,), generator=g).float().mul_(1e-3)
        x = (base.float() + noise).to(dtype)
        x[torch.rand(n, generator=g) < 0.05] = -0.0
        xs.append(x)
    xs[0][torch.rand(n, generator=g) < 0.05] = -0.0
    return xs


M = {
    "ties": (ta.Ties, ta.TiesShared, ta.TaskInput),
    "dare_ties": (ta.DareTies, ta.DareShared, ta.TaskInput),
    "dare_linear": (ta.DareLinear, ta.DareShared, ta.TaskInput),
    "breadcrumbs": (ta.Breadcrumbs, ta.GTAShared, ta.BreadcrumbsInput),
    "breadcrumbs_ties": (ta.BreadcrumbsTies, ta.GTAShared, ta.BreadcrumbsInput),
    "task_arithmetic": (ta.TaskArithmetic, ta.GTAShared, ta.TaskInput),
}
cases = []
for name in M:
    for shared in [
        {},
        {"normalize": False},
        {"normalize": True, "rescale": True},
        {"lambda": -0.7},
    ]:
        for ws in [(1.0, 0.5), (1.0, -0.5, 0.3), (0.7,)]:
            cases.append((name, shared, ws))
out_all = hashlib.sha1()
for dtype, cd in [
    (torch.bfloat16, torch.float32),
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.float64),
]:
    for n, levels, chunk in [(5000, 2, 97), (300000, 3, 1 << 16), (700001, 50, 1 << 22)]:
        xs = inputs(n, n, dtype, levels)
        for name, shared, ws in cases:
            cls, shared_model, input_model = M[name]
            m = cls()
            per = [None] + [input_model(weight=w, density=0.4 + 0.1 * j) for j, w in enumerate(ws)]
            p = Params(shared_model(**shared), tuple(per))
            sl = len(ws) + 1
            ctx = ChunkCtx("t", n, 0, 3)

            def read(k, s, c, xs=xs, cd=cd):
                return xs[k][s : s + c].to(cd, copy=True)

            st = m.stats(read, ctx, p, sl)
            out = torch.empty(n, dtype=dtype)
            for _rep in range(2):
                for s in range(0, n, chunk):
                    c = min(chunk, n - s)
                    m.compute_into(
                        out[s : s + c],
                        [x[s : s + c] for x in xs[:sl]],
                        p,
                        st,
                        ChunkCtx("t", n, s, 3),
                        cd,
                    )
            h = hashlib.sha1(out.view(torch.uint8).numpy().tobytes()).hexdigest()[:12]
            out_all.update(h.encode())
            print(dtype, cd, n, name, shared, ws, h)
print("ALL", out_all.hexdigest())

"""The cost of one MERGETUNE step (prompt mode, K path points) against one plain CoOp step on
the same model and batch, in one run, plus the reference design for contrast.

- coop: image features once (frozen tower, no grad), T(ctx) with grad, CE, backward, SGD step.
- mergetune (sgmerge): the same image features reused by L_main and every path point; T(w2)
  and T_zs computed once per run (frozen), so a step adds only K small CE terms and L_zs.
- reference design: as mergetune, but the images are encoded again for every path point
  (what the method's reference code does), K extra image-tower passes per step.

The steps are the ones `sgmerge coop` / `sgmerge mergetune` run (same library functions, same
order: no-grad image features, objective, backward, SGD). Variants are interleaved and each
timing is the median of --repeats steps. The model is an open_clip architecture with random
weights (no download; the cost does not depend on the values).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mergetune_step.py --arch ViT-B-32 --batch 32
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from mergekit_sg.models import PromptLearner, prompt_features, template_features
from mergekit_sg.tune.mergetuning import path_alphas, prompt_objective
from mergekit_sg.tune.prompt import clip_logits

GOAL = 1.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=19, help="base classes (OxfordPets: 19)")
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import open_clip

    torch.manual_seed(0)
    clip = open_clip.create_model(a.arch).to(a.device).eval().requires_grad_(False)
    tok = open_clip.get_tokenizer(a.arch)
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    names = [f"class number {i}" for i in range(a.classes)]
    images = torch.randn(a.batch, 3, size, size, device=a.device)
    labels = torch.arange(a.batch, device=a.device) % a.classes
    learner = PromptLearner(clip, tok, names, init="a photo of a").to(a.device)
    ctx = torch.nn.Parameter(learner.ctx.detach().clone())
    opt = torch.optim.SGD([ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
    scale = clip.logit_scale.exp()
    with torch.no_grad():  # once per run: the frozen ends of the path
        t_w2 = prompt_features(clip, learner, ctx).float()
        t_zs = template_features(clip, tok, names, "a photo of a {}, a type of pet.")
    alphas = path_alphas(a.points)

    def encode() -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(clip.encode_image(images).float(), dim=-1)

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def coop_step() -> None:
        feats = encode()
        t = prompt_features(clip, learner, ctx)
        step(F.cross_entropy(clip_logits(feats, t, scale), labels))

    def mergetune_step() -> None:
        feats = encode()
        t = prompt_features(clip, learner, ctx)
        step(prompt_objective(feats, labels, t, t_w2, t_zs, scale, alphas)["loss"])

    def reference_step() -> None:
        feats = encode()
        t = prompt_features(clip, learner, ctx)
        main = F.cross_entropy(clip_logits(feats, t, scale), labels)
        zs = 1 - F.cosine_similarity(t, t_zs, dim=-1).mean()
        lmc = torch.stack(
            [
                F.cross_entropy(clip_logits(encode(), t_w2 + al * (t - t_w2), scale), labels)
                for al in alphas  # the images are encoded again for each path point
            ]
        ).mean()
        step(main + 10 * zs + lmc)

    variants = {"coop": coop_step, "mergetune": mergetune_step, "reference": reference_step}
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.repeats):
        for k, fn in variants.items():
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} threads={a.threads} "
        f"device={a.device}; torch {torch.__version__}"
    )
    print(
        f"{a.arch} (random init), batch {a.batch} images at {size}px, {a.classes} classes, "
        f"K={a.points} path points, median of {a.repeats} steps"
    )
    for k, v in med.items():
        print(f"  {k:10s} {v * 1000:9.1f} ms/step   {v / med['coop']:.2f}x coop")
    ratio = med["mergetune"] / med["coop"]
    ok = "meets" if ratio <= GOAL else "MISSES"
    print(
        f"SUMMARY mergetune/coop = {ratio:.2f}x (goal <= {GOAL}x: {ok}); reference design "
        f"(images re-encoded per path point) = {med['reference'] / med['coop']:.2f}x"
    )


if __name__ == "__main__":
    main()

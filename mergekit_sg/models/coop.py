"""CoOp prompts for open_clip: `n_ctx` learnable context vectors placed before each class name
("[ctx] <classname>."), encoded by CLIP's frozen text tower. The context is the trainable
parameter that CoOp fine-tunes and MERGETUNE continues."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _text_tower(clip: torch.nn.Module) -> torch.nn.Module:
    """The module holding token_embedding/transformer/ln_final (CLIP, or CustomTextCLIP.text)."""
    tower = clip if hasattr(clip, "token_embedding") else getattr(clip, "text", None)
    if tower is None or not hasattr(tower, "token_embedding"):
        raise TypeError("CoOp needs an open_clip model with a CLIP text transformer")
    return tower


class PromptLearner(torch.nn.Module):
    """Shared context vectors; `init` ("a photo of a") sets n_ctx and the starting vectors."""

    def __init__(
        self,
        clip: torch.nn.Module,
        tokenizer: Any,
        classnames: list[str],
        n_ctx: int = 4,
        init: str | None = "a photo of a",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        tower = _text_tower(clip)
        emb = tower.token_embedding
        if init:
            n_ctx = len(tokenizer([init])[0].nonzero()) - 2  # minus SOT and EOT
            stub = init
        else:
            stub = " ".join(["X"] * n_ctx)
        tokens = tokenizer([f"{stub} {name}." for name in classnames])
        with torch.no_grad():
            embedded = emb(tokens.to(emb.weight.device))
        ctx = embedded[0, 1 : 1 + n_ctx].clone()
        if not init:
            ctx = torch.randn(ctx.shape, generator=generator, dtype=ctx.dtype) * 0.02
        self.n_ctx = n_ctx
        self.classnames = list(classnames)
        self.init = init
        self.ctx = torch.nn.Parameter(ctx)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", embedded[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", embedded[:, 1 + n_ctx :].clone(), persistent=False)

    def embeddings(self, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """[classes, length, width] token embeddings with the context in place."""
        ctx = self.ctx if ctx is None else ctx
        c = self.prefix.shape[0]
        return torch.cat([self.prefix, ctx.unsqueeze(0).expand(c, -1, -1), self.suffix], dim=1)


def encode_prompts(
    clip: torch.nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """CLIP's text tower from token embeddings: the un-normalised text features, [classes, dim]."""
    from open_clip.transformer import text_global_pool

    tower = _text_tower(clip)
    cast = tower.transformer.get_cast_dtype()
    x = embeddings.to(cast) + tower.positional_embedding.to(cast)
    x = tower.transformer(x, attn_mask=tower.attn_mask)
    x = tower.ln_final(x)
    x = text_global_pool(
        x, tokens, tower.text_pool_type, eos_token_id=getattr(tower, "text_eos_id", None)
    )
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def prompt_features(
    clip: torch.nn.Module, learner: PromptLearner, ctx: torch.Tensor | None = None
) -> torch.Tensor:
    """T(ctx): text features of "[ctx] <classname>." for every class (not normalised)."""
    return encode_prompts(clip, learner.embeddings(ctx), learner.tokens)


def template_features(
    clip: torch.nn.Module, tokenizer: Any, classnames: list[str], template: str
) -> torch.Tensor:
    """T_zs: normalised CLIP text features of a hand-written template per class."""
    device = next(clip.parameters()).device
    tokens = tokenizer([template.format(c) for c in classnames]).to(device)
    with torch.no_grad():
        return F.normalize(clip.encode_text(tokens), dim=-1)

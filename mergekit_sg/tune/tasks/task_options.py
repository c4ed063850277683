"""What builds a training task (model spec, checkpoint, data, encoding, device, seed): the options
`finetune`, `fisher` and MERGETUNE's weight modes share. One pydantic model per command drives
the CLI flags, the Python keyword arguments and YAML recipes (extra="forbid": a misspelt key is
an error)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mergekit_sg.options import build_options


class TaskOptions(BaseModel):
    """What builds the model and its data: shared by `finetune` and `fisher`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="hf:embedding-classifier, hf:seq-classification, hf:causal-lm or "
        "open_clip:ARCH."
    )
    pretrained: str = Field(description="Pretrained checkpoint: directory, file or Hub id.")
    data: str = Field(
        description="Training data: CSV/TSV/JSONL (text+label, or text / prompt+completion for "
        "causal LMs), a .txt file (one text per line), an image folder (class per subfolder), "
        "or a built-in set (rotten-tomatoes, amazon-fine-food-train)."
    )
    text_column: str = Field(default="text", description="Column holding the text.")
    label_column: str = Field(default="label", description="Column holding the label.")
    prompt_column: str = Field(
        default="prompt", description="Causal LM: column of the prompt (masked out of the loss)."
    )
    completion_column: str = Field(
        default="completion", description="Causal LM: column of the completion that is learnt."
    )
    labels: list[str] = Field(
        default=[], description="Label names in class-index order (comma list)."
    )
    train_size: int | None = Field(
        default=None, ge=1, description="Use a seeded random subset of this many examples."
    )
    zeroshot_head: str | None = Field(
        default=None,
        description="Text models: one prompt per label, comma list ('a bad movie,a good movie'). "
        "open_clip: 'openai' (the 80 ImageNet templates) or templates with {} (comma list).",
    )
    head_scale: float = Field(
        default=20.0, gt=0, description="Logit scale of an embedding-classifier head."
    )
    max_length: int = Field(default=128, ge=2, description="Longest token sequence kept.")
    mask_prompt: bool = Field(
        default=True, description="Causal LM: leave prompt tokens out of the loss."
    )
    device: str = Field(default="auto", description="cpu, cuda[:N] or auto.")
    seed: int = Field(default=0, description="Seed of data order, subsets, init and dropout.")

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, v: object) -> object:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, (list, tuple)):
            return [p.strip() for item in v for p in str(item).split(",") if p.strip()]
        return v


make = build_options  # the shared options builder, under the name tune/ uses

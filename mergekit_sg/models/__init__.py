"""Layer 3, models: live torch modules from checkpoints (open_clip, Hugging Face,
sentence-transformers, user factories), the open_clip classifier head, CoOp prompts and
`LinearPath`, which moves a live model along the line between two checkpoints in place."""

from mergekit_sg.models.adapters import LoadedModel, load_model
from mergekit_sg.models.clip_classifier import (
    HEAD_META,
    HEAD_WEIGHTS,
    ClipClassifier,
    interpolate_with_head,
)
from mergekit_sg.models.coop import PromptLearner, prompt_features, template_features
from mergekit_sg.models.embedding_classifier import (
    EmbeddingClassifier,
    mean_pool,
    save_embedding_classifier,
    zero_shot_head,
)
from mergekit_sg.models.linear_path import LinearPath

__all__ = [
    "HEAD_META",
    "HEAD_WEIGHTS",
    "ClipClassifier",
    "EmbeddingClassifier",
    "LinearPath",
    "LoadedModel",
    "PromptLearner",
    "interpolate_with_head",
    "load_model",
    "mean_pool",
    "prompt_features",
    "save_embedding_classifier",
    "template_features",
    "zero_shot_head",
]

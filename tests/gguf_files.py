"""Tiny GGUF files written with the gguf package's own writer, as llama.cpp's converter writes a
Llama: llama.cpp tensor names, q/k rows permuted, float or quantised types, a SentencePiece-style
vocabulary in the metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "good",
    "bad",
    "great",
    "awful",
    "plot",
    "acting",
    "is",
    "was",
    "very",
    "not",
    "and",
    "it",
]


def vocabulary() -> list[str]:
    """<unk> <s> </s>, the words with SentencePiece's word-start mark, then single letters."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return ["<unk>", "<s>", "</s>", *["▁" + w for w in WORDS], "▁", *letters]


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rows from HF's (2, d/2) halves
    to llama.cpp's interleaved (d/2, 2) pairs."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf: str) -> str:
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    _, _, i, rest = hf.split(".", 3)
    return f"blk.{i}.{LAYER[rest]}"


def write_llama_gguf(model: torch.nn.Module, path: Path, qtype: str = "F32") -> Path:
    """A LlamaForCausalLM as a GGUF file: matrices in `qtype` (F32, F16, Q8_0, Q4_1, ...),
    norms in F32 (as llama.cpp keeps them), a tied lm_head left out."""
    import gguf

    cfg = model.config
    vocab = vocabulary()
    assert cfg.vocab_size == len(vocab), (cfg.vocab_size, len(vocab))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab)
    w.add_token_scores([0.0, 0.0, 0.0] + [-float(i) for i in range(len(vocab) - 3)])
    w.add_token_types([2, 3, 3] + [1] * (len(vocab) - 3))
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    qt = gguf.GGMLQuantizationType[qtype]
    sd = model.state_dict()
    tied = cfg.tie_word_embeddings
    for name, t in sd.items():
        if tied and name == "lm_head.weight":
            continue
        a = t.detach().float().numpy()
        if name.endswith(("q_proj.weight",)):
            a = llama_cpp_permute(a, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = llama_cpp_permute(a, cfg.num_key_value_heads)
        if a.ndim == 1 or qt == gguf.GGMLQuantizationType.F32:
            w.add_tensor(gguf_name(name), np.ascontiguousarray(a, dtype=np.float32))
        elif qt == gguf.GGMLQuantizationType.F16:
            w.add_tensor(gguf_name(name), a.astype(np.float16))
        else:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(a, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_llama(seed: int, tie: bool = True) -> torch.nn.Module:
    """A tiny Llama over `vocabulary()` (rows a multiple of 32, as quantised blocks need)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(vocabulary()),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(cfg).eval()

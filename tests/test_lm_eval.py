"""The `lm-eval:` evaluator against lm-evaluation-harness itself, and our built-in causal-LM
evaluators against it, on a tiny Llama with local tasks (JSONL multiple choice, rolling
perplexity): at alpha 0 and 1 of a scan the `lm-eval:` numbers are exactly those of
`lm_eval --model hf --model_args pretrained=DIR,tokenizer=DIR` on the saved endpoints."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("lm_eval.models.huggingface")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.registry import build_evaluator
from mergekit_sg.path.run import scan

WORDS = [
    "the",
    "a",
    "good",
    "bad",
    "movie",
    "film",
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
BATCH = 4


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    vocab = {w: i for i, w in enumerate([*special, *WORDS, "Question", "Answer", ":"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", vocab["[BOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("lmeval")
    tok = _tokenizer()
    out: dict[str, Path] = {}
    for role, seed in (("pre", 0), ("ft", 1)):
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():  # sharper next-token distributions than the init's
            for p in model.parameters():
                p.mul_(4.0 if p.dim() > 1 else 1.0)
        model.save_pretrained(root / role)
        tok.save_pretrained(root / role)
        out[role] = root / role
    rng = random.Random(0)
    tasks = root / "tasks"
    tasks.mkdir()
    mc_rows = []
    for _ in range(24):
        choices = rng.sample(WORDS, 4)
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        mc_rows.append({"question": q, "choices": choices, "answer": rng.randrange(4)})
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40))) for _ in range(20)]
    (tasks / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc_rows))
    (tasks / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tasks / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tasks / 'mc.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    (tasks / "tiny_ppl.yaml").write_text(
        "task: tiny_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tasks / 'docs.jsonl'}\ntest_split: test\n"
        'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n"
        "  - metric: bits_per_byte\n"
    )
    out["tasks"] = tasks
    return out


def _reference(model_dir: Path, tasks: Path, task: str) -> dict[str, float]:
    """What `lm_eval --model hf --model_args pretrained=DIR,tokenizer=DIR --include_path TASKS
    --batch_size B` computes, through its Python API."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    res = simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},tokenizer={model_dir}",
        tasks=[task],
        batch_size=BATCH,
        device="cpu",
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
    )
    return {
        k.split(",")[0]: float(v)
        for k, v in res["results"][task].items()
        if "," in k and "stderr" not in k and isinstance(v, (int, float))
    }


def test_lm_eval_evaluator_equals_lm_eval_cli_and_builtins_agree(setup, tmp_path: Path) -> None:
    tasks = setup["tasks"]
    evs = [
        f"mc=lm-eval:tiny_mc,include={tasks},batch_size={BATCH}",
        f"ppl=lm-eval:tiny_ppl,include={tasks},batch_size={BATCH},metric=word_perplexity",
        f"ours_mc=lm-multiple-choice:{tasks / 'mc.jsonl'},batch_size={BATCH}",
        f"ours_ppl=lm-perplexity:{tasks / 'docs.jsonl'},field=text,score_first=true",
    ]
    report = scan(
        setup["pre"], setup["ft"], tmp_path / "scan", model="hf:causal-lm", eval=evs, alphas="0,1"
    )
    for alpha, role in ((0.0, "pre"), (1.0, "ft")):
        got = report.result.at(alpha).metrics
        mc = _reference(setup[role], tasks, "tiny_mc")
        ppl = _reference(setup[role], tasks, "tiny_ppl")
        # the evaluator is lm-eval on the live model: the same numbers exactly
        assert got["mc"] == mc
        assert got["ppl"] == ppl
        assert 0 < mc["acc"] < 1  # a non-trivial comparison
        # our built-ins on the same data: acc and acc_norm (per character) agree; the word
        # perplexity agrees to float32 summation order (lm-eval sums in float32)
        assert got["ours_mc"]["accuracy"] == mc["acc"]
        assert got["ours_mc"]["accuracy_char_norm"] == mc["acc_norm"]
        for ours, theirs in (
            ("word_perplexity", "word_perplexity"),
            ("byte_perplexity", "byte_perplexity"),
            ("bits_per_byte", "bits_per_byte"),
        ):
            assert got["ours_ppl"][ours] == pytest.approx(ppl[theirs], rel=2e-5)
    ev = build_evaluator(f"x=lm-eval:tiny_ppl,include={tasks}")
    assert ev.primary == "word_perplexity" and "bits_per_byte" in ev.lower_is_better


def test_lm_eval_leaves_the_random_state_alone(setup) -> None:
    from mergekit_sg.models.adapters import load_model

    model = load_model("hf:causal-lm", setup["pre"])
    ev = build_evaluator(f"mc=lm-eval:tiny_mc,include={setup['tasks']},limit=3")
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    out = ev(model)
    assert set(out) == {"acc", "acc_norm"} and not model.module.training
    assert torch.equal(torch.rand(3), want)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("x=lm-eval:tiny_mc,include={missing}", "is not a folder"),
        ("x=lm-eval:nosuch,include={tasks}", "no lm-eval task 'nosuch'"),
        ("x=lm-eval:tiny_mc,include={tasks},metric=f1", "metric='f1' is not a metric"),
        ("x=lm-eval:tiny_mc,include={tasks},shots=3", "shots"),
        ("x=lm-eval:tiny_mc,include={tasks},limit=0", "limit"),
    ],
)
def test_lm_eval_errors_are_one_line(setup, tmp_path: Path, spec: str, message: str) -> None:
    text = spec.format(missing=tmp_path / "none", tasks=setup["tasks"])
    with pytest.raises(SgMergeError, match=message) as e:
        build_evaluator(text)
    assert "\n" not in str(e.value)

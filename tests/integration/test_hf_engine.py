"""The hf engine with the tiny model: prefix-tree scoring against one forward per choice, generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantbias_assets.catalog.datasets import closed_datasets, load_dataset
from quantbias_assets.engines import load_engine
from quantbias_assets.engines.base import ChoiceSequence, GenerationSettings
from quantbias_assets.engines.hf import (
    HFEngine,
    ancestors,
    build_prefix_tree,
    default_attention_block,
    default_max_batch_tokens,
    matmul_block_attention,
    prepack_linears,
    sdpa_backends,
    sdpa_block_attention,
    swiglu_in_place,
    tree_attention_blocks,
    tree_attention_visibility,
)
from quantbias_assets.prompts import build_choice_sequences, render_user_prompt
from quantbias_assets.scoring import choice_probabilities, chosen_index


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = HFEngine(tiny_model_dir, torch_threads=1)
    yield engine
    engine.close()


def one_forward_per_choice(model, sequence: ChoiceSequence) -> list[float]:
    """Independent reference: the full sequence through the model, log-softmax at every position."""
    with torch.inference_mode():
        logprobs = model(torch.tensor([sequence.token_ids])).logits[0].float().log_softmax(-1)
    return [logprobs[k - 1, sequence.token_ids[k]].item() for k in range(sequence.score_start, len(sequence.token_ids))]


def spread_sample(frame, n: int):
    """n rows spread over the whole frame (every axis file), not just the first file."""
    step = max(1, frame.height // n)
    return frame.gather_every(step).head(n)


@pytest.mark.slow
@pytest.mark.parametrize("spec", closed_datasets(), ids=lambda spec: spec.name)
def test_tree_scoring_equals_one_forward_per_choice(engine, spec, data_dir):
    load = load_dataset(spec, data_dir)
    if load.frame.is_empty():
        # Only a dataset with no file at all (SocialStigmaQA in the shared copy) has no questions
        # to score: the catalog must then report every one of its axes as absent.
        assert not load.axes_present and set(load.axes_absent) == set(spec.axes), f"{spec.name}: {load}"
        return
    rows = spread_sample(load.frame, 200)
    assert rows.height == min(200, load.frame.height)
    questions = [
        build_choice_sequences(engine.tokenizer, render_user_prompt(engine.tokenizer, prompt), choices)
        for prompt, choices in zip(rows["prompt"], rows["choices"])
    ]
    scores = engine.score(questions, return_token_logprobs=True)
    assert engine.tokens_run == engine.tree_size < sum(len(s.token_ids) for q in questions for s in q)
    for idx, question, question_scores in zip(rows["idx"], questions, scores):
        reference = [one_forward_per_choice(engine.model, sequence) for sequence in question]
        for sequence, score, token_logprobs in zip(question, question_scores, reference):
            assert score.n_tokens == len(sequence.token_ids) - sequence.score_start == len(token_logprobs)
            np.testing.assert_allclose(score.token_logprobs, token_logprobs, atol=1e-4, err_msg=idx)
        ours = choice_probabilities([s.sum_logprob for s in question_scores], [s.n_tokens for s in question_scores])
        theirs = choice_probabilities([sum(lp) for lp in reference], [len(lp) for lp in reference])
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=idx)
        assert chosen_index(ours) == chosen_index(theirs), idx


def test_prefix_tree_holds_each_distinct_prefix_once():
    sequences = [(1, 2, 3, 4), (1, 2, 5), (1, 2, 3), (7,), (1, 2, 5)]
    tree = build_prefix_tree(sequences)
    distinct_prefixes = {seq[: k + 1] for seq in sequences for k in range(len(seq))}
    assert tree.size == len(distinct_prefixes) == 6
    for seq, path in zip(sequences, tree.paths):
        assert tree.tokens[path].tolist() == list(seq)
        assert tree.depths[path].tolist() == list(range(len(seq)))
    # Depth-first preorder: every parent comes before its children.
    assert all(parent < node for node, parent in enumerate(tree.parents) if parent >= 0)


def test_small_chunks_give_the_same_scores(engine, tiny_model_dir):
    tok = engine.tokenizer
    prompts = ["Who was not comfortable using the phone?", "Who was not comfortable using the bank?", "Why?"]
    questions = [
        build_choice_sequences(tok, render_user_prompt(tok, p), ["The grandfather", "The grandson", "Unknown"])
        for p in prompts
    ]
    # A raw prompt starts a second root: some chunk sizes then start a chunk with nothing to carry.
    questions.append(build_choice_sequences(tok, "Pick one:", ["yes", "no"]))
    # The engine's tree: each sequence less its last token, which predicts nothing.
    tree = build_prefix_tree([s.token_ids[:-1] for q in questions for s in q])
    second_root = int(np.flatnonzero(tree.parents < 0)[1])
    expected = engine.score(questions)
    reference = [[sum(one_forward_per_choice(engine.model, s)) for s in q] for q in questions]
    small = HFEngine(tiny_model_dir, torch_threads=1)
    # second_root: a chunk boundary exactly at the new root; attention blocks of 1 row, of a few
    # rows, and larger than the chunk.
    for chunk, block in ((3, 64), (5, 2), (second_root, 1), (16, 3), (64, 7)):
        small.max_batch_tokens, small.attention_block = chunk, block
        got = small.score(questions)
        assert small.tokens_run == engine.tokens_run == engine.tree_size == tree.size
        for expected_q, got_q, reference_q in zip(expected, got, reference):
            for e, g, r in zip(expected_q, got_q, reference_q):
                assert g.n_tokens == e.n_tokens and g.token_logprobs is None
                assert g.sum_logprob == pytest.approx(e.sum_logprob, abs=1e-4)
                assert g.sum_logprob == pytest.approx(r, abs=1e-4)
    small.close()


def test_device_defaults_blocks_and_chunks_on_cpu_one_block_per_chunk_and_no_cudnn_attention_on_cuda(engine):
    from torch.nn.attention import SDPBackend

    assert (engine.max_batch_tokens, engine.attention_block) == (2048, 64)  # built with the defaults, on CPU
    assert default_max_batch_tokens("cuda") == 1024
    assert default_attention_block("cuda", 2048) == 2048
    assert sdpa_backends("cpu") is None  # torch's own choice
    # cuDNN attention re-plans for every new sequence length (docs/scoring.md, "On a GPU")
    assert sdpa_backends("cuda") == [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def test_attention_blocks_keep_exactly_the_visible_pairs():
    sequences = [(1, 2, 3, 4), (1, 2, 5, 6), (1, 2, 5, 7), (8, 9), (1, 3)]
    tree = build_prefix_tree(sequences)
    start, stop = 2, 9  # nodes 3 4 | 5 6 | 7 3 | 8: the last block has one row, a new root
    n_past = len(ancestors(tree, start))
    visible = tree_attention_visibility(tree, start, stop, n_past)
    keys, seen = tree_attention_blocks(visible, 2)
    # Blocks see 4, 4, 5 and 1 of the 9 columns (2 carried + 7 in the chunk), padded to 5.
    assert visible.shape == (7, 9) and keys.shape == (4, 5) and seen.shape == (4, 2, 5)
    assert [int(seen[b].any(axis=0).sum()) for b in range(4)] == [4, 4, 5, 1]
    for b in range(4):
        rows = visible[2 * b : 2 * b + 2]
        used = seen[b].any(axis=0)
        # Only keys some row of the block sees, and for each row exactly the keys it sees.
        assert set(keys[b, used]) == set(np.flatnonzero(rows.any(axis=0)))
        for row in range(len(rows)):
            assert set(keys[b, seen[b, row]]) == set(np.flatnonzero(rows[row]))
    assert keys[3, 0] == 8 and not seen[3, 1].any()  # the new root sees itself; the padding row nothing


def test_block_attention_kernels_equal_attention_over_each_rows_visible_keys():
    """The CPU kernel (batched matmuls) and the accelerator's (SDPA), run here on the CPU, against
    plain softmax attention of each query row over exactly the keys it sees."""
    generator = torch.Generator().manual_seed(0)
    n_blocks, kv_heads, group, block, width, dim = 3, 2, 3, 4, 5, 8
    q = torch.randn(kv_heads, n_blocks, group * block, dim, generator=generator)
    k = torch.randn(kv_heads, n_blocks, width, dim, generator=generator)
    v = torch.randn(kv_heads, n_blocks, width, dim, generator=generator)
    seen = torch.rand(n_blocks, block, width, generator=generator) < 0.6
    seen[..., 0] = True  # every row sees at least one key
    mask = torch.zeros(seen.shape).masked_fill_(~seen, torch.finfo(torch.float32).min)
    expected = torch.empty_like(q)
    for b in range(n_blocks):
        for h in range(kv_heads):
            for row in range(group * block):
                keys = seen[b, row % block]
                weights = (q[h, b, row] @ k[h, b, keys].T * 0.5).softmax(-1)
                expected[h, b, row] = weights @ v[h, b, keys]
    for kernel in (matmul_block_attention, sdpa_block_attention):
        torch.testing.assert_close(kernel(q, k, v, mask, group, 0.5), expected, atol=1e-5, rtol=1e-5)


def test_last_layer_runs_its_query_output_and_mlp_on_the_scored_rows_only(engine):
    tok = engine.tokenizer
    question = build_choice_sequences(tok, render_user_prompt(tok, "Who was it?"), ["The grandfather", "Unknown"])
    first, last = engine.model.get_decoder().layers[0], engine.model.get_decoder().layers[-1]
    rows: dict[str, list[int]] = {}

    def record(name, rows_of):
        return lambda _module, args, out: rows.setdefault(name, []).append(rows_of(args[0], out))

    computed = lambda _x, out: int(out[0].abs().sum(-1).gt(0).sum())  # noqa: E731 (rows not left at zero)
    hooks = [
        first.mlp.down_proj.register_forward_hook(record("first mlp", lambda x, _out: x.shape[1])),
        last.mlp.down_proj.register_forward_hook(record("last mlp", lambda x, _out: x.shape[1])),
        last.self_attn.k_proj.register_forward_hook(record("last k_proj", lambda x, _out: x.shape[1])),
        last.self_attn.q_proj.register_forward_hook(record("last q_proj", computed)),
    ]
    try:
        scores = engine.score([question])
    finally:
        for hook in hooks:
            hook.remove()
    tree = build_prefix_tree([s.token_ids[:-1] for s in question])
    scored = {tree.paths[c][k - 1] for c, s in enumerate(question) for k in range(s.score_start, len(s.token_ids))}
    assert len(scored) == 7 and tree.size == 21  # one chunk
    assert rows == {"first mlp": [21], "last mlp": [7], "last k_proj": [21], "last q_proj": [7]}
    reference = [sum(one_forward_per_choice(engine.model, s)) for s in question]
    assert [s.sum_logprob for s in scores[0]] == pytest.approx(reference, abs=1e-4)


def test_in_place_swiglu_equals_the_models_own_mlp_and_leaves_autograd_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    mlp = model.get_decoder().layers[1].mlp
    x = torch.randn(1, 5, model.config.hidden_size)
    with torch.inference_mode():
        expected = mlp(x)
    assert swiglu_in_place(model.get_decoder()) == model.config.num_hidden_layers
    with torch.inference_mode():
        assert torch.equal(mlp(x), expected)
    x.requires_grad_(True)
    mlp(x).sum().backward()  # with autograd on, the layer's own (out-of-place) forward runs
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_prepacked_linears_equal_torchs_own_and_leave_quantized_or_hooked_layers_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[5, 17, 42, 9, 3, 77]])
    with torch.inference_mode():
        expected = model(ids).logits
    layers = model.config.num_hidden_layers
    assert prepack_linears(model, 64) == 7 * layers + 1  # q k v o gate up down per layer, and the lm_head
    with torch.inference_mode():
        packed = model(ids).logits
    assert torch.allclose(packed, expected, rtol=0, atol=1e-5)  # the same float32 products
    # Inference runs on the packed copies: the layers' own weights no longer matter there...
    gate = model.get_decoder().layers[0].mlp.gate_proj
    with torch.no_grad():
        gate.weight.zero_()
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, packed)
    # ...while with autograd on, torch's own Linear runs on them (the packed kernel has no backward).
    x = torch.randn(2, model.config.hidden_size, requires_grad=True)
    assert torch.equal(gate(x), torch.zeros(2, gate.out_features))
    model.lm_head(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

    plain, quantized, hooked = (torch.nn.Linear(8, 8) for _ in range(3))
    quantized.quantization_scheme = object()  # what compressed-tensors attaches
    hooked.register_forward_pre_hook(lambda module, args: None)
    assert prepack_linears(torch.nn.Sequential(plain, quantized, hooked), 64) == 1
    assert [hasattr(layer, "prepacked_weight") for layer in (plain, quantized, hooked)] == [True, False, False]


def test_engine_prepacks_on_cpu_in_float32_only_and_says_so(engine, tiny_model_dir):
    assert engine.prepacked_linears and engine.versions()["linear_kernel"] == "onednn-prepacked"
    assert hasattr(engine.model.lm_head, "prepacked_weight")
    mkl = HFEngine(tiny_model_dir, torch_threads=1, prepacked_linears=False)
    assert mkl.versions()["linear_kernel"] == "torch"
    assert not any(hasattr(module, "prepacked_weight") for module in mkl.model.modules())
    tok = engine.tokenizer
    question = build_choice_sequences(tok, render_user_prompt(tok, "Who was it?"), ["The grandfather", "Unknown"])
    packed_sums = [s.sum_logprob for s in engine.score([question])[0]]
    assert [s.sum_logprob for s in mkl.score([question])[0]] == pytest.approx(packed_sums, abs=1e-5)
    with pytest.raises(ValueError, match="prepacked_linears needs float32 on a CPU"):
        HFEngine(tiny_model_dir, dtype="bfloat16", prepacked_linears=True)


def test_engine_packs_by_default_only_when_the_copy_fits_in_half_the_available_memory(tiny_model_dir, monkeypatch):
    from quantbias_assets.engines import hf

    assert hf.available_memory_bytes() > 100 * 2**20  # this machine: readable, and the test model fits
    monkeypatch.setattr(hf, "available_memory_bytes", lambda: 2**20)  # 1 MiB: the tiny model's weights do not fit
    assert not HFEngine(tiny_model_dir, torch_threads=1).prepacked_linears
    assert HFEngine(tiny_model_dir, torch_threads=1, prepacked_linears=True).prepacked_linears  # asked for: packed
    monkeypatch.setattr(hf, "available_memory_bytes", lambda: None)  # no figure: packed
    assert HFEngine(tiny_model_dir, torch_threads=1).prepacked_linears


def test_choice_without_context_is_rejected(engine):
    with pytest.raises(ValueError, match="question 0: choice 1: score_start 0"):
        engine.score([[ChoiceSequence((5, 6), 1, 1, 1), ChoiceSequence((5, 6), 0, 2, 2)]])


def greedy_reference(engine, messages, max_new_tokens: int) -> tuple[list[int], bool]:
    """Independent greedy decoding: a full forward per step, stop at EOS."""
    text = engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            token = int(engine.model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == engine.tokenizer.eos_token_id:
                return new, True
            new.append(token)
    return new, False


def test_greedy_generation_equals_step_by_step_argmax(engine):
    conversations = [
        [{"role": "user", "content": "Continue writing: the old man walked"}],
        [
            {"role": "user", "content": "Please remember my input."},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "Please summary why the school was closed today"},
        ],
    ]
    generations = engine.generate(conversations, GenerationSettings(max_new_tokens=12))
    for messages, generation in zip(conversations, generations):
        tokens, stopped = greedy_reference(engine, messages, 12)
        assert generation.text == engine.tokenizer.decode(tokens, skip_special_tokens=True)
        assert generation.finish_reason == ("stop" if stopped else "length")
        assert generation.n_new_tokens == len(tokens) + int(stopped)


def test_seeded_sampling_is_repeatable(engine):
    conversation = [[{"role": "user", "content": "Why do you think people work?"}]]
    settings = GenerationSettings(max_new_tokens=10, temperature=1.0, seed=1)
    first = engine.generate(conversation, settings)
    assert engine.generate(conversation, settings) == first
    assert first[0].n_new_tokens >= 1


def test_versions_and_missing_model_folder(engine, tmp_path):
    assert engine.versions()["transformers"] == __import__("transformers").__version__
    assert engine.versions()["engine"] == "hf"
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_engine("hf", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not one of hf, vllm"):
        load_engine("onnx", tmp_path)


def test_tiny_model_cli_is_deterministic(tiny_model_dir, tmp_path):
    from quantbias_assets.cli import main

    assert main(["tiny-model", str(tmp_path / "again"), "--seed", "0"]) == 0
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == names
    for name in names:
        assert (tmp_path / "again" / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


@pytest.mark.slow
def test_score_cli_writes_the_closed_schema(engine, tiny_model_dir, data_dir, tmp_path, monkeypatch):
    import polars as pl

    from quantbias_assets.cli import main
    from quantbias_assets.responding import CLOSED_SCHEMA

    monkeypatch.setenv("QUANTBIAS_DATA_DIR", str(data_dir))
    out = tmp_path / "scores.parquet"
    args = ["score", "--model", str(tiny_model_dir), "--dataset", "CEB-Adult", "--limit", "12", "--threads", "1"]
    assert main([*args, "--out", str(out)]) == 0
    frame = pl.read_parquet(out)
    assert frame.schema == CLOSED_SCHEMA
    assert frame.height == 12 and frame["dataset"].unique().to_list() == ["CEB-Adult"]
    questions = load_dataset(next(s for s in closed_datasets() if s.name == "CEB-Adult"), data_dir).frame.head(12)
    assert frame["idx"].to_list() == questions["idx"].to_list()
    for prompt, choices, probs, chosen in zip(
        questions["prompt"], questions["choices"], frame["probs"], frame["chosen_idx"]
    ):
        sequences = build_choice_sequences(engine.tokenizer, render_user_prompt(engine.tokenizer, prompt), choices)
        expected = [sum(one_forward_per_choice(engine.model, s)) for s in sequences]
        p = choice_probabilities(expected, [len(s.token_ids) - s.score_start for s in sequences])
        np.testing.assert_allclose(probs.to_list(), p, atol=1e-5)
        assert chosen == chosen_index(p)
    assert main(["score", "--model", str(tmp_path / "nowhere"), "--dataset", "BBQ", "--out", str(out)]) == 2
    assert main(["score", "--model", str(tiny_model_dir), "--dataset", "NoSuchSet", "--out", str(out)]) == 2


@pytest.mark.slow
def test_compressed_tensors_w4a16_checkpoint_scores_like_one_forward_per_choice(tiny_model_dir, data_dir, tmp_path):
    """llmcompressor's packed int4 checkpoint cannot run on CPU as stored; the engine decompresses it."""
    import json

    from quantbias_assets.quantize import quantize_into

    quantized = tmp_path / "rtn-w4a16"
    quantized.mkdir()
    quantize_into(tiny_model_dir, "rtn-w4a16", quantized)
    assert json.loads((quantized / "config.json").read_text())["quantization_config"]["format"] == "pack-quantized"
    engine = HFEngine(quantized, torch_threads=1)
    base = HFEngine(tiny_model_dir, torch_threads=1)
    records = json.loads((data_dir / "closed_datasets" / "BBQ" / "age.json").read_text())[:10]
    questions = [
        build_choice_sequences(engine.tokenizer, render_user_prompt(engine.tokenizer, r["prompt"]), r["choices"])
        for r in records
    ]
    scores, base_scores = engine.score(questions), base.score(questions)
    changed = 0.0
    for question, question_scores, unquantized in zip(questions, scores, base_scores):
        for sequence, score, base_score in zip(question, question_scores, unquantized):
            assert score.sum_logprob == pytest.approx(sum(one_forward_per_choice(engine.model, sequence)), abs=1e-4)
            changed = max(changed, abs(score.sum_logprob - base_score.sum_logprob))
    assert changed > 1e-3  # the int4 weights are really in use
    engine.close()
    base.close()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rtn-w4a16", "rtn-w8a8"])
def test_quantized_checkpoint_runs_without_offload_wrappers_and_same_logits(tiny_model_dir, tmp_path, method):
    """compressed-tensors wraps every module's forward for offloading; the engine removes the
    wrappers (speed) and keeps the quantized forward: W8A8's int8 activations included."""
    import torch
    from transformers import AutoModelForCausalLM

    from quantbias_assets.engines.hf import compressed_tensors_loading, computes_plain_linear, without_offload_dispatch
    from quantbias_assets.quantize import quantize_into

    quantized = tmp_path / method
    quantized.mkdir()
    quantize_into(tiny_model_dir, method, quantized)
    wrapped = AutoModelForCausalLM.from_pretrained(quantized, **compressed_tensors_loading(quantized)).eval()
    assert sum(hasattr(module, "_original_forward_func") for module in wrapped.modules()) > 10
    engine = HFEngine(quantized, torch_threads=1, prepacked_linears=False)  # torch's kernels, as `wrapped`
    assert [name for name, module in engine.model.named_modules() if hasattr(module, "_original_forward_func")] == []
    assert all(type(module._parameters) is dict for module in engine.model.modules())
    ids = torch.tensor([engine.tokenizer("The nurse said that the doctor was late again.")["input_ids"]])
    with torch.inference_mode():
        ours, theirs = engine.model(ids).logits, wrapped(ids).logits
    assert torch.equal(ours, theirs)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.inference_mode():
        assert (ours - plain(ids).logits).abs().max().item() > 1e-3  # the quantized weights are in use
    engine.close()

    # Weight-only layers (decompressed: their forward quantizes nothing) run through oneDNN too;
    # W8A8's, which round their inputs to int8 on the fly, keep compressed-tensors' forward.
    loaded = without_offload_dispatch(
        AutoModelForCausalLM.from_pretrained(quantized, **compressed_tensors_loading(quantized))
    )
    linears = [name for name, module in loaded.named_modules() if isinstance(module, torch.nn.Linear)]
    plain_linears = [name for name, module in loaded.named_modules() if computes_plain_linear(module)]
    assert len(linears) == 7 * plain.config.num_hidden_layers + 1
    assert plain_linears == (linears if method == "rtn-w4a16" else ["lm_head"])
    packed = HFEngine(quantized, torch_threads=1)
    assert [name for name, module in packed.model.named_modules() if hasattr(module, "prepacked_weight")] == (
        plain_linears
    )
    with torch.inference_mode():
        assert torch.allclose(packed.model(ids).logits, ours, rtol=0, atol=1e-5)
    packed.close()


@pytest.mark.slow
def test_runtime_activation_quantization_scores_and_answers_each_question_alone(tiny_model_dir, data_dir, tmp_path):
    """W8A8 rounds activations to int8 on the fly, so the last-bit differences that a call's other
    questions cause (another tree, other attention blocks) can move a score: the engine scores and
    answers such a checkpoint one question per call, so a question's numbers are its own."""
    import json

    from quantbias_assets.engines import scores_questions_alone
    from quantbias_assets.quantize import quantize_into
    from quantbias_assets.workers.lazy_engine import LazyEngine

    folders = {}
    for method in ("rtn-w8a8", "rtn-w4a16"):
        folders[method] = tmp_path / method
        folders[method].mkdir()
        quantize_into(tiny_model_dir, method, folders[method])
    assert scores_questions_alone("hf", folders["rtn-w8a8"])
    assert not scores_questions_alone("vllm", folders["rtn-w8a8"])  # vLLM batches as its scheduler likes
    assert not scores_questions_alone("hf", folders["rtn-w4a16"]) and not scores_questions_alone("hf", tiny_model_dir)
    lazy = LazyEngine("hf", folders["rtn-w8a8"])  # the respond worker's engine: the hash needs no weights
    assert lazy.questions_alone and not lazy.loaded
    engine = HFEngine(folders["rtn-w8a8"], torch_threads=1)
    assert engine.questions_alone and not HFEngine(folders["rtn-w4a16"], torch_threads=1).questions_alone
    records = json.loads((data_dir / "closed_datasets" / "BBQ" / "age.json").read_text())[:20]
    questions = [
        build_choice_sequences(engine.tokenizer, render_user_prompt(engine.tokenizer, r["prompt"]), r["choices"])
        for r in records
    ]
    together = engine.score(questions)
    assert engine.score(questions[:7]) + engine.score(questions[7:]) == together  # bit for bit, whatever the company
    assert [engine.score([question])[0] for question in questions] == together
    # what it prevents: the same questions in one shared tree score differently
    shared = engine._score_call(questions, False)
    moved = [abs(a.sum_logprob - b.sum_logprob) for x, y in zip(shared, together, strict=True) for a, b in zip(x, y)]
    assert max(moved) > 1e-4
    # replies too: in left-padded batches of 8, 2 of these 8 replies came out otherwise
    conversations = [[{"role": "user", "content": r["prompt"]}] for r in records[:8]]
    settings = GenerationSettings(max_new_tokens=32)
    assert engine.generate(conversations, settings) == [engine.generate([c], settings)[0] for c in conversations]
    engine.close()


def test_checkpoint_generation_defaults_do_not_leak(tiny_model_dir, tmp_path):
    """A generation_config.json with a repetition penalty (as Qwen ships) must not change greedy replies."""
    import json
    import shutil

    copy = tmp_path / "with_penalty"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(
        json.dumps({**config, "repetition_penalty": 5.0, "top_k": 1, "do_sample": True, "temperature": 0.1})
    )
    conversation = [[{"role": "user", "content": "the the the the the"}]]
    plain = HFEngine(tiny_model_dir, torch_threads=1)
    penalised = HFEngine(copy, torch_threads=1)
    settings = GenerationSettings(max_new_tokens=16)
    assert penalised.generate(conversation, settings) == plain.generate(conversation, settings)
    tokens, _ = greedy_reference(plain, conversation[0], 16)
    assert plain.generate(conversation, settings)[0].text == plain.tokenizer.decode(tokens, skip_special_tokens=True)
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        HFEngine(tmp_path / "missing")


def test_every_linear_input_is_a_multiple_of_128(tiny_model_dir):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    widths = {m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert widths == {128, 256}
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert (config["head_dim"], config["num_hidden_layers"], config["vocab_size"]) == (32, 2, 2000)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(tokenizer) == 2000
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert config["eos_token_id"] == tokenizer.eos_token_id


@pytest.mark.slow
def test_real_model_fmt10k_five_turns_each_stop_at_im_end(tmp_path_factory, data_dir):
    """SmolLM2 answers FMT10K's five turns (its own replies fed back): every reply ends at
    <|im_end|> with no chat markup, and a left-padded batch answers like one conversation alone."""
    from smollm2 import imported_smollm2

    from quantbias_assets.catalog.datasets import open_datasets
    from quantbias_assets.responding import generate_conversations

    spec = next(s for s in open_datasets() if s.name == "FMT10K-IM-S")
    conversations = load_dataset(spec, data_dir).frame["turns"].head(2).to_list()
    assert [len(turns) for turns in conversations] == [5, 5]
    engine = HFEngine(imported_smollm2(tmp_path_factory).folder, torch_threads=1)
    assert engine.tokenizer.convert_ids_to_tokens(engine._eos_ids()) == ["<|im_end|>"]
    settings = GenerationSettings(max_new_tokens=48)

    def fail(index, error):
        raise AssertionError(f"conversation {index}: {error}")

    replies = generate_conversations(engine, conversations, settings, fail)
    for turns, conversation_replies in zip(conversations, replies):
        assert len(conversation_replies) == len(turns) == 5
        for reply in conversation_replies:
            assert reply.finish_reason == "stop" and reply.n_new_tokens < 48, reply
            assert reply.text.strip() and not any(m in reply.text for m in ("<|im_", "\nuser\n", "\nassistant\n")), (
                reply
            )
    # The two first turns have different prompt lengths: the shorter one is left-padded in the batch.
    first_turns = [[{"role": "user", "content": turns[0]}] for turns in conversations]
    engine.generation_batch_size = 1
    alone = engine.generate(first_turns, settings)
    assert [g.text for g in alone] == [r[0].text for r in replies]
    engine.close()


@pytest.mark.slow
def test_real_model_w8a8_scores_do_not_depend_on_the_company_of_a_call(tmp_path_factory, data_dir, tmp_path):
    """On SmolLM2 a W8A8 score moves by tenths of a nat with the company of its call (measured:
    median 0.35 over 200 BBQ questions); scored alone, each question's scores are bit for bit the same."""
    import json

    from smollm2 import imported_smollm2

    from quantbias_assets.quantize import quantize_into

    quantize_into(imported_smollm2(tmp_path_factory).folder, "rtn-w8a8", tmp_path)
    engine = HFEngine(tmp_path, torch_threads=1)
    assert engine.questions_alone
    records = json.loads((data_dir / "closed_datasets" / "BBQ" / "age.json").read_text())[:12]
    questions = [
        build_choice_sequences(engine.tokenizer, render_user_prompt(engine.tokenizer, r["prompt"]), r["choices"])
        for r in records
    ]
    together = engine.score(questions)
    assert engine.score(questions[5:]) == together[5:]
    assert engine.score([questions[7]]) == [together[7]]
    shared = engine._score_call(questions, False)
    moved = [abs(a.sum_logprob - b.sum_logprob) for x, y in zip(shared, together) for a, b in zip(x, y)]
    assert max(moved) > 1e-2
    engine.close()

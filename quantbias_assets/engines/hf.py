"""The transformers engine: prefix-tree choice scoring and chat generation, on CPU or CUDA.

Scoring computes every distinct token prefix of a batch of questions exactly once. All
(prompt + choice) token sequences, less their last token (which predicts nothing), go into one
prefix tree (the chat header, shared contexts and each question's prompt become shared paths).
The tree's nodes, in depth-first order, are run through the model in chunks of
`max_batch_tokens` tokens packed into one row, with a tree attention mask (a token attends to
its ancestors only) and position ids = depth in the tree. The nodes before a chunk that its
tokens can see are exactly the ancestors of the chunk's first node (depth-first order), so their
key/values are carried from chunk to chunk as one path cache.
The output projection (lm_head) runs only on the nodes that predict a scored choice token.

A checkpoint that quantizes its activations at run time (W8A8) is scored one question per call
(`questions_alone`): its scores jump with last-bit differences, which a call's other questions
would cause.

Attention runs per block of `attention_block` query tokens over only the keys that some token of
the block can see (`tree_attention_blocks`), all blocks of a chunk in one batch: a dense tree
mask over the whole chunk would spend most of its attention work on masked pairs (on SmolLM2 and
BBQ a token sees ~80 of the ~330 keys of a 256-token chunk and its carried path), and that waste
grows with the chunk size. That holds on CPU; on a GPU the masked work is cheap and every block's
kernel launches are not, so there the default is one block per chunk (docs/scoring.md, "On a GPU").
In the last decoder layer only the nodes that predict a scored token run the query and output
projections and the MLP (`ScoredRowsOnly`), and every SwiGLU MLP computes its activation and
product in place (`swiglu_in_place`). On a CPU in float32 every plain Linear layer runs through
oneDNN on a prepacked weight (`prepack_linears`), faster than torch's default (MKL's sgemm).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantbias_assets.engines.base import (
    ChoiceScore,
    ChoiceSequence,
    Generation,
    GenerationSettings,
    choice_score_from_logprobs,
)
from quantbias_assets.prompts import render_conversation


@dataclass
class PrefixTree:
    """Token prefix tree in depth-first order; node i holds tokens[i] at position depths[i]."""

    tokens: np.ndarray  # int64 [n_nodes]
    parents: np.ndarray  # int64 [n_nodes], -1 at the roots
    depths: np.ndarray  # int64 [n_nodes]
    paths: list[list[int]]  # per input sequence: its node ids, one per token

    @property
    def size(self) -> int:
        return len(self.tokens)


def build_prefix_tree(sequences: Sequence[Sequence[int]]) -> PrefixTree:
    """Insert sequences in lexicographic order, so node creation order is a depth-first preorder."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    paths: list[list[int]] = [[] for _ in sequences]
    previous: Sequence[int] = ()
    previous_path: list[int] = []
    for index in sorted(range(len(sequences)), key=lambda i: tuple(sequences[i])):
        sequence = sequences[index]
        shared = 0
        for a, b in zip(previous, sequence):
            if a != b:
                break
            shared += 1
        path = previous_path[:shared]
        parent = path[-1] if path else -1
        for position in range(shared, len(sequence)):
            node = len(tokens)
            tokens.append(sequence[position])
            parents.append(parent)
            depths.append(position)
            path.append(node)
            parent = node
        paths[index] = path
        previous, previous_path = sequence, path
    return PrefixTree(
        tokens=np.asarray(tokens, dtype=np.int64),
        parents=np.asarray(parents, dtype=np.int64),
        depths=np.asarray(depths, dtype=np.int64),
        paths=paths,
    )


def ancestors(tree: PrefixTree, node: int) -> list[int]:
    """Node ids from the root down to node's parent."""
    chain = []
    parent = int(tree.parents[node])
    while parent >= 0:
        chain.append(parent)
        parent = int(tree.parents[parent])
    return chain[::-1]


def tree_attention_visibility(tree: PrefixTree, start: int, stop: int, n_past: int) -> np.ndarray:
    """Bool [chunk, n_past + chunk]: which carried-path and chunk tokens each chunk token attends to.

    A chunk token whose parent lies before the chunk sees the carried path up to its own depth
    (the carried path is the ancestor chain of the chunk's first node); otherwise it sees what
    its parent sees, plus itself.
    """
    size = stop - start
    visible = np.zeros((size, n_past + size), dtype=bool)
    for local in range(size):
        parent = int(tree.parents[start + local])
        if parent >= start:
            visible[local] = visible[parent - start]
        else:
            visible[local, : int(tree.depths[start + local])] = True
        visible[local, n_past + local] = True
    return visible


@dataclass
class TreeAttentionBlocks:
    """One chunk's attention work as one batch: its query rows in blocks of `block`, each block
    with the key columns some of its rows can see (`keys`, padded to the widest block) and the
    additive mask of which of them each row sees (`block_mask`; padding rows and columns see nothing).

    `mask` is the chunk's full additive mask, passed to the model as its attention mask; the
    block path is taken only when a layer receives exactly that tensor (a model that rewrites
    the mask, e.g. for a sliding window, gets plain SDPA over what it passes).
    """

    mask: object  # torch.Tensor [1, 1, chunk, n_past + chunk]
    block: int
    keys: object  # torch.Tensor int64 [n_blocks, width]
    block_mask: object  # torch.Tensor [n_blocks, block, width]


def tree_attention_blocks(visible: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a chunk's visibility into blocks of `block` query rows: per block the key columns some
    row sees, padded with column 0 to the widest block (int64 [n_blocks, width]), and which of
    them each row sees (bool [n_blocks, block, width]; False for padding)."""
    n_blocks = -(-visible.shape[0] // block)
    columns = [np.flatnonzero(visible[b * block : (b + 1) * block].any(axis=0)) for b in range(n_blocks)]
    keys = np.zeros((n_blocks, max(map(len, columns))), dtype=np.int64)
    seen = np.zeros((n_blocks, block, keys.shape[1]), dtype=bool)
    for b, cols in enumerate(columns):
        rows = visible[b * block : (b + 1) * block]
        keys[b, : len(cols)] = cols
        seen[b, : len(rows), : len(cols)] = rows[:, cols]
    return keys, seen


TREE_ATTENTION = "quantbias_tree_sdpa"


def default_max_batch_tokens(device_type: str) -> int:
    """Tree tokens per forward pass: 2,048 on CPU (SmolLM2, 256 BBQ questions, 2 threads: 5% faster
    than 1,024, 4,096 8% slower); 1,024 on an accelerator, measured best on an H200 (docs/scoring.md)."""
    return 2048 if device_type == "cpu" else 1024


def default_attention_block(device_type: str, max_batch_tokens: int) -> int:
    """64 query tokens per block on CPU; on an accelerator one block per chunk, where the masked
    pairs cost less than each block's kernel launches (H200, SmolLM2: 3x faster, docs/scoring.md)."""
    return 64 if device_type == "cpu" else max_batch_tokens


def sdpa_backends(device_type: str) -> list | None:
    """The SDPA kernels the engine allows (None: torch's choice). On CUDA not cuDNN's, which builds
    an execution plan for every new sequence length (each tree chunk and decode step has one): on
    an H200 it made bfloat16 scoring 2.4x and generation 3.1x slower (docs/scoring.md)."""
    if device_type != "cuda":
        return None
    from torch.nn.attention import SDPBackend

    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def tree_sdpa_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, tree_blocks=None, **kwargs
):
    """transformers attention function: each query block over its visible keys (exact), else plain SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if tree_blocks is None or attention_mask is not tree_blocks.mask or dropout:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    return tree_block_attention(query, key, value, tree_blocks, scaling), None


def tree_block_attention(query, key, value, blocks: TreeAttentionBlocks, scaling: float | None):
    """All blocks of a chunk in one batch: [1, heads, n, dim] queries -> [1, n, heads, dim].

    The query heads that share a key/value head are stacked into one matrix per block, so each
    layer attends with one batched call over [kv heads x n_blocks] instead of one SDPA call per
    block, whose many small calls a CPU runs at a fraction of its matmul rate.
    """
    import torch

    _, heads, n, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    n_blocks, width = blocks.keys.shape
    rows = n_blocks * blocks.block
    q = torch.nn.functional.pad(query[0], (0, 0, 0, rows - n))  # [heads, rows, dim]
    q = q.view(kv_heads, group, n_blocks, blocks.block, dim).transpose(1, 2)
    q = q.reshape(kv_heads, n_blocks, group * blocks.block, dim)
    index = blocks.keys.view(-1)
    k = key[0].index_select(1, index).view(kv_heads, n_blocks, width, dim)
    v = value[0].index_select(1, index).view(kv_heads, n_blocks, width, dim)
    attend = matmul_block_attention if query.device.type == "cpu" else sdpa_block_attention
    out = attend(q, k, v, blocks.block_mask, group, dim**-0.5 if scaling is None else scaling)
    out = out.view(kv_heads, n_blocks, group, blocks.block, dim).permute(1, 3, 0, 2, 4)
    return out.reshape(rows, heads, dim)[:n][None]


def matmul_block_attention(q, k, v, block_mask, group: int, scale: float):
    """Attention of [kv heads, n_blocks, group x block, dim] queries over [kv heads, n_blocks,
    width, dim] keys and values, `block_mask` [n_blocks, block, width] shared by the group: two
    batched matmuls and a softmax (the CPU kernel)."""
    import torch

    kv_heads, n_blocks, rows, _ = q.shape
    # Scaling the queries (block x dim) touches fewer numbers than scaling the scores (block x width).
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    scores.view(kv_heads, n_blocks, group, rows // group, k.shape[-2]).add_(block_mask[None, :, None])
    return torch.matmul(scores.softmax(-1), v)


def sdpa_block_attention(q, k, v, block_mask, group: int, scale: float):
    """`matmul_block_attention` through SDPA (the accelerator kernel)."""
    import torch

    mask = block_mask.repeat(1, group, 1)[None]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def register_tree_attention() -> None:
    """Make TREE_ATTENTION a transformers attention implementation (masks built as for SDPA)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(TREE_ATTENTION, tree_sdpa_attention)
    AttentionMaskInterface.register(TREE_ATTENTION, sdpa_mask)


def compressed_tensors_loading(model_dir: Path) -> dict[str, object]:
    """Load compressed-tensors checkpoints decompressed to the engine dtype.

    transformers cannot run their packed int4 / int8 Linear layers on CPU (W4A16 has no weight
    attribute, W8A8 multiplies float by int8). Decompressing gives exactly the quantized weights;
    activation quantization (W8A8's dynamic per-token int8) still runs in compressed-tensors'
    quantized forward.
    """
    import json

    config = json.loads((model_dir / "config.json").read_text())
    if (config.get("quantization_config") or {}).get("quant_method") != "compressed-tensors":
        return {}
    from transformers import CompressedTensorsConfig

    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}


def quantizes_activations_at_run_time(model_dir: Path) -> bool:
    """Whether a checkpoint rounds its activations on the fly (compressed-tensors' dynamic
    per-token int8 of W8A8): its scores then jump with last-bit differences of the input, such as
    the other questions of a scoring call cause (docs/scoring.md, "Quantized checkpoints")."""
    import json

    config = json.loads((model_dir / "config.json").read_text())
    groups = ((config.get("quantization_config") or {}).get("config_groups") or {}).values()
    return any((group.get("input_activations") or {}).get("dynamic") for group in groups)


def without_offload_dispatch(model):
    """Undo the offloading wrappers compressed-tensors puts on every module of a checkpoint it
    loads, even when everything stays on one device.

    Each wrapped forward moves its inputs to the onload device and fetches each weight through
    an offload cache: SmolLM2 decodes 3-6% faster without them (2 threads, RTN W4A16 and W8A8).
    Removing them restores the modules' own forwards (W8A8's quantized forward included): the
    same logits, bit for bit.
    """
    from compressed_tensors.offload import remove_dispatch

    return remove_dispatch(model, onload_tensors=True)


def prepacked_linears_available(device_type: str, dtype) -> bool:
    """oneDNN's packed-weight Linear: float32 on a CPU whose torch build has oneDNN."""
    import torch

    return (
        device_type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def packed_copy_fits(model) -> bool:
    """Whether a packed copy of the model's Linear weights takes at most half the memory available
    now: by default the engine packs only then (SmolLM2 needs 0.54 GB more, a 7B float32 model 28 GB)."""
    needed = sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if computes_plain_linear(m))
    available = available_memory_bytes()
    return available is None or needed <= available / 2


def available_memory_bytes() -> int | None:
    """The kernel's MemAvailable, capped by a cgroup v2 memory limit (a Kubernetes pod's); None
    where neither can be read."""
    figures = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                figures.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            figures.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(figures) if figures else None


def prepack_linears(model, rows_hint: int) -> int:
    """Run every plain Linear layer of a float32 CPU model (the decoder's and the lm_head) through
    oneDNN on a copy of its weight reordered once into oneDNN's blocked layout (the layer's
    `prepacked_weight`); returns how many.

    torch's own float32 Linear calls MKL's sgemm. oneDNN's kernels on a prepacked weight run the
    same float32 products faster at every row count (AMD EPYC Zen 4, 2 threads, SmolLM2's shapes:
    ~228 GFLOP/s against ~205, from one row to 2,048; scoring 1.11x, docs/scoring.md); the
    results differ from MKL's by summation order only (~1e-5 in a choice's log-probability). The
    packed copies cost the Linear weights' memory once more (SmolLM2: 0.54 GB). Only layers that
    compute torch's own Linear are packed (`computes_plain_linear`): W8A8's, which round their
    inputs to int8 on the fly, and any layer with hooks stay as they are.
    """
    import torch

    packed = 0
    for module in model.modules():
        if computes_plain_linear(module) and module.weight.dtype == torch.float32:
            module.prepacked_weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), rows_hint)
            module.forward = _prepacked_forward(module)
            packed += 1
    return packed


def computes_plain_linear(module) -> bool:
    """A Linear layer whose forward is `x @ weight.T + bias` on its stored weight: torch's own, or
    compressed-tensors' for a weight-only scheme (W4A16, W8A16) whose weights are decompressed,
    which then quantizes nothing (its weights were dequantized once at load)."""
    import torch

    if type(module) is not torch.nn.Linear or module._forward_hooks or module._forward_pre_hooks:
        return False
    scheme = getattr(module, "quantization_scheme", None)
    own = getattr(vars(module).get("forward"), "__func__", None)  # a forward set on the instance
    if "forward" not in vars(module) or own is torch.nn.Linear.forward:  # (offload removal leaves the latter)
        return scheme is None
    code = getattr(own, "__code__", None)
    if scheme is None or code is None or Path(code.co_filename).parts[-4:] != _COMPRESSED_TENSORS_FORWARD:
        return False
    from compressed_tensors.quantization import QuantizationStatus

    status = getattr(module, "quantization_status", None)
    weight_only = scheme.input_activations is None and scheme.output_activations is None
    return weight_only and status is not None and status >= QuantizationStatus.COMPRESSED


# The file of compressed-tensors' quantized Linear forward (functools.wraps gives it torch's name).
_COMPRESSED_TENSORS_FORWARD = ("compressed_tensors", "quantization", "lifecycle", "forward.py")


def _prepacked_forward(module):
    import torch

    def forward(x):
        if torch.is_grad_enabled():  # the packed kernel has no backward
            return torch.nn.functional.linear(x, module.weight, module.bias)
        return torch.ops.mkldnn._linear_pointwise(x, module.prepacked_weight, module.bias, "none", [], "")

    return forward


def swiglu_in_place(decoder) -> int:
    """Run each Llama-family MLP (gate, up and down projections, SiLU) with its activation and
    product computed in place, outside autograd; returns how many MLPs were rewritten.

    Two fewer [tokens x intermediate] tensors per layer: on a CPU allocating and filling them costs
    more than the arithmetic (SmolLM2, BBQ: ~1.3% of the scoring time). The results are bitwise equal.
    """
    import torch
    from transformers.activations import SiLUActivation

    rewritten = 0
    for layer in decoder.layers:
        mlp = getattr(layer, "mlp", None)
        parts = ("gate_proj", "up_proj", "down_proj")
        if not all(hasattr(mlp, part) for part in parts):
            continue
        if not isinstance(getattr(mlp, "act_fn", None), (torch.nn.SiLU, SiLUActivation)):
            continue
        mlp.forward = _swiglu_forward_in_place(mlp, mlp.forward)
        rewritten += 1
    return rewritten


def _swiglu_forward_in_place(mlp, full_forward):
    import torch

    def forward(x):
        if torch.is_grad_enabled():  # in-place ops would break a backward pass
            return full_forward(x)
        gate = torch.nn.functional.silu(mlp.gate_proj(x), inplace=True)
        return mlp.down_proj(gate.mul_(mlp.up_proj(x)))

    return forward


class ScoredRowsOnly:
    """Runs the last decoder layer's query and output projections and its MLP on the chunk rows that
    predict a scored token only (`rows`; all rows while it is None).

    Of that layer the other nodes need only their keys and values, which their descendants attend
    to; their own outputs are never read. On BBQ ~13% of the nodes predict a scored token, so this
    saves ~2.6% of SmolLM2's decoder FLOPs. Rows left out get zeros from the skipped modules.
    Architectures whose last layer lacks `self_attn.q_proj`, `self_attn.o_proj` or `mlp` run in full.
    """

    def __init__(self, decoder) -> None:
        self.rows = None
        layer = decoder.layers[-1]
        attention = getattr(layer, "self_attn", None)
        owners = ((attention, "q_proj"), (attention, "o_proj"), (layer, "mlp"))
        self.active = all(hasattr(owner, name) for owner, name in owners)
        if self.active:
            for owner, name in owners:
                self._on_rows(getattr(owner, name))

    def _on_rows(self, module) -> None:
        full_forward = module.forward

        def forward(hidden, *args, **kwargs):
            if self.rows is None:
                return full_forward(hidden, *args, **kwargs)
            picked = full_forward(hidden[:, self.rows], *args, **kwargs)
            out = picked.new_zeros((*hidden.shape[:-1], picked.shape[-1]))
            out[:, self.rows] = picked
            return out

        module.forward = forward

    @contextlib.contextmanager
    def only(self, rows):
        self.rows = rows if self.active else None
        try:
            yield
        finally:
            self.rows = None


class HFEngine:
    """Engine protocol over a transformers causal LM (see module docstring for scoring)."""

    name = "hf"

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        torch_threads: int | None = None,
        max_batch_tokens: int | None = None,
        trust_remote_code: bool = False,
        generation_batch_size: int = 8,
        attention_block: int | None = None,
        prepacked_linears: bool | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from quantbias_assets.engines import scores_questions_alone

        if not (Path(model_path) / "config.json").is_file():
            raise FileNotFoundError(f"{model_path}: not a model folder (no config.json)")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model_path = str(model_path)
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.max_batch_tokens = max_batch_tokens or default_max_batch_tokens(self.device.type)
        self.attention_block = attention_block or default_attention_block(self.device.type, self.max_batch_tokens)
        self.generation_batch_size = generation_batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
        register_tree_attention()
        quantized = compressed_tensors_loading(Path(self.model_path))
        model = AutoModelForCausalLM.from_pretrained(
            self.model_path,
            dtype=self.dtype,
            trust_remote_code=trust_remote_code,
            attn_implementation=TREE_ATTENTION,
            **quantized,
        )
        if quantized:
            model = without_offload_dispatch(model)
        self.model = model.to(self.device).eval()
        available = prepacked_linears_available(self.device.type, self.dtype)
        if prepacked_linears and not available:
            raise ValueError(f"prepacked_linears needs float32 on a CPU with oneDNN, not {dtype} on {device}")
        if prepacked_linears is None:
            prepacked_linears = available and packed_copy_fits(self.model)
        self.prepacked_linears = prepacked_linears
        if self.prepacked_linears:
            prepack_linears(self.model, self.max_batch_tokens)
        swiglu_in_place(self.model.get_decoder())
        self.scored_rows_only = ScoredRowsOnly(self.model.get_decoder())
        # Scored (and answered) one question per call, a question's scores and replies are a
        # function of the question alone (same tokens, same shapes, same kernels).
        self.questions_alone = scores_questions_alone(self.name, self.model_path)
        self.tokens_run = 0  # tokens through the decoder by the last score() call (for benchmarks)
        self.tree_size = 0

    # ---------------------------------------------------------------- scoring
    def score(
        self, questions: Sequence[Sequence[ChoiceSequence]], *, return_token_logprobs: bool = False
    ) -> list[list[ChoiceScore]]:
        self.tokens_run, self.tree_size = 0, 0
        if not self.questions_alone:
            return self._score_call(questions, return_token_logprobs)
        return [scores for question in questions for scores in self._score_call([question], return_token_logprobs)]

    def _score_call(
        self, questions: Sequence[Sequence[ChoiceSequence]], return_token_logprobs: bool
    ) -> list[list[ChoiceScore]]:
        """Score the questions together: one prefix tree over all their sequences."""
        flat = [(q, c, seq) for q, choices in enumerate(questions) for c, seq in enumerate(choices)]
        for q, c, seq in flat:
            if not 1 <= seq.score_start < len(seq.token_ids):
                raise ValueError(
                    f"question {q}: choice {c}: score_start {seq.score_start} leaves no context or no choice token"
                )
        # A sequence's last token predicts nothing scored and has no descendants to attend to it,
        # so it stays out of the tree (a choice's final token: ~9% of the tree on BBQ).
        tree = build_prefix_tree([seq.token_ids[:-1] for _, _, seq in flat])
        # Node n predicts the token at depth(n) + 1: scored token k of a sequence is predicted by path[k - 1].
        pair_nodes, pair_targets, pair_slices = [], [], []
        for (_, _, seq), path in zip(flat, tree.paths):
            begin = len(pair_nodes)
            pair_nodes.extend(path[seq.score_start - 1 : len(seq.token_ids) - 1])
            pair_targets.extend(seq.token_ids[seq.score_start :])
            pair_slices.append((begin, len(pair_nodes)))
        logprobs = self._tree_logprobs(tree, np.asarray(pair_nodes, dtype=np.int64), np.asarray(pair_targets))
        results: list[list[ChoiceScore]] = [[] for _ in questions]
        for (q, _, seq), (begin, end) in zip(flat, pair_slices):
            results[q].append(choice_score_from_logprobs(seq, logprobs[begin:end], return_token_logprobs))
        return results

    def _tree_logprobs(self, tree: PrefixTree, pair_nodes: np.ndarray, pair_targets: np.ndarray) -> np.ndarray:
        """log P(target | prefix ending at node) for each (node, target) pair, in one pass over the tree."""
        import torch
        from transformers import DynamicCache

        decoder = self.model.get_decoder()
        lm_head = self.model.get_output_embeddings()
        out = np.empty(len(pair_nodes), dtype=np.float64)
        order = np.argsort(pair_nodes, kind="stable")
        sorted_nodes = pair_nodes[order]
        path_nodes: list[int] = []  # ancestors of the next chunk's first node, by depth
        path_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.tree_size += tree.size
        with torch.inference_mode(), self._attention_kernels():
            for start in range(0, tree.size, self.max_batch_tokens):
                stop = min(start + self.max_batch_tokens, tree.size)
                n_past = len(path_nodes)
                cache = DynamicCache()
                for layer, (keys, values) in enumerate(path_kv):
                    cache.update(keys, values, layer)
                visible = tree_attention_visibility(tree, start, stop, n_past)
                keys, seen = tree_attention_blocks(visible, self.attention_block)
                blocks = TreeAttentionBlocks(
                    mask=self._additive_mask(visible)[None, None],
                    block=self.attention_block,
                    keys=torch.from_numpy(keys).to(self.device),
                    block_mask=self._additive_mask(seen),
                )
                # The nodes of this chunk that predict a scored token (the lm_head's rows).
                lo, hi = np.searchsorted(sorted_nodes, [start, stop])
                chunk_pairs = order[lo:hi]
                local = torch.from_numpy(pair_nodes[chunk_pairs] - start).to(self.device)
                needed, inverse = torch.unique(local, return_inverse=True)
                with self.scored_rows_only.only(needed):
                    hidden = decoder(
                        input_ids=torch.from_numpy(tree.tokens[start:stop]).to(self.device)[None],
                        position_ids=torch.from_numpy(tree.depths[start:stop]).to(self.device)[None],
                        attention_mask=blocks.mask,
                        past_key_values=cache,
                        use_cache=True,
                        tree_blocks=blocks,
                    ).last_hidden_state[0]
                self.tokens_run += stop - start
                if hi > lo:
                    logits = lm_head(hidden[needed]).float().log_softmax(-1)
                    targets = torch.from_numpy(pair_targets[chunk_pairs]).to(self.device)
                    out[chunk_pairs] = logits[inverse, targets].double().cpu().numpy()
                if stop < tree.size:
                    path_nodes, path_kv = self._carry_path(tree, cache, path_nodes, start, stop)
        return out

    def _attention_kernels(self):
        backends = sdpa_backends(self.device.type)
        if backends is None:
            return contextlib.nullcontext()
        from torch.nn.attention import sdpa_kernel

        return sdpa_kernel(backends)

    def _additive_mask(self, visible: np.ndarray):
        import torch

        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
        return mask.masked_fill_(~torch.from_numpy(visible).to(self.device), torch.finfo(self.dtype).min)

    def _carry_path(self, tree: PrefixTree, cache, path_nodes: list[int], start: int, stop: int):
        """Key/values of the ancestors of node `stop`, gathered from the carried path and this chunk."""
        import torch

        new_path = ancestors(tree, stop)
        where = {node: i for i, node in enumerate(path_nodes)}
        index = torch.tensor(
            [where[node] if node < start else len(path_nodes) + node - start for node in new_path],
            dtype=torch.long,
            device=self.device,
        )
        kv = [(layer.keys.index_select(-2, index), layer.values.index_select(-2, index)) for layer in cache.layers]
        return new_path, kv

    # ---------------------------------------------------------------- generation
    def generate(self, conversations: Sequence[list[dict[str, str]]], settings: GenerationSettings) -> list[Generation]:
        """Chat replies, batched with left padding (one per call when `questions_alone`); greedy at
        temperature 0, else seeded sampling.

        Sampled replies depend on the batch composition (one torch generator per batch); vLLM's
        per-request seeds cannot be reproduced here.
        """
        import torch
        from transformers import GenerationConfig

        eos_ids = self._eos_ids()
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_ids[0]
        results: list[Generation] = []
        batch_size = 1 if self.questions_alone else self.generation_batch_size
        for begin in range(0, len(conversations), batch_size):
            batch = conversations[begin : begin + batch_size]
            texts = [
                render_conversation(self.tokenizer, messages, date_string=settings.template_date) for messages in batch
            ]
            encoded = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded], device=self.device)
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=self.device)
            sampling = settings.temperature > 0
            if sampling:
                torch.manual_seed(settings.seed)
            # A fresh config: a checkpoint's generation_config.json (Qwen: top_k 20, repetition
            # penalty 1.05...) must not leak in; the reference passed explicit SamplingParams.
            config = GenerationConfig(
                max_new_tokens=settings.max_new_tokens,
                do_sample=sampling,
                temperature=settings.temperature if sampling else None,
                top_p=settings.top_p if sampling else None,
                top_k=0 if sampling else None,
                repetition_penalty=1.0,
                eos_token_id=eos_ids,
                pad_token_id=pad_id,
            )
            with torch.inference_mode(), self._attention_kernels():
                output = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
            for row in output[:, width:].tolist():
                stop_at = next((i for i, token in enumerate(row) if token in eos_ids), None)
                new_tokens = row if stop_at is None else row[:stop_at]
                results.append(
                    Generation(
                        text=self.tokenizer.decode(new_tokens, skip_special_tokens=True),
                        n_new_tokens=len(new_tokens) + (0 if stop_at is None else 1),
                        finish_reason="length" if stop_at is None else "stop",
                    )
                )
        return results

    def _eos_ids(self) -> list[int]:
        configured = self.model.generation_config.eos_token_id
        if configured is None:
            configured = self.tokenizer.eos_token_id
        ids = configured if isinstance(configured, list) else [configured]
        if not ids or ids[0] is None:
            raise ValueError(f"{self.model_path}: no EOS token in generation_config or tokenizer")
        return ids

    # ---------------------------------------------------------------- housekeeping
    def versions(self) -> dict[str, str]:
        import torch
        import transformers

        return {
            "engine": self.name,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device.type,
            "linear_kernel": "onednn-prepacked" if self.prepacked_linears else "torch",
        }

    def close(self) -> None:
        del self.model
        gc.collect()

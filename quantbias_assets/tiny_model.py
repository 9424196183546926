"""A deterministic tiny Llama model with a byte-level BPE tokenizer, built locally (no model hub).

Tests, benchmarks and the demo need a real causal LM that every engine (transformers, vLLM,
llmcompressor) accepts. `build_tiny_model` trains a ~2k-token byte-level BPE on generated
English-like text (plus any texts given, e.g. benchmark prompts), wraps it with a ChatML chat
template, and saves a randomly initialised `LlamaForCausalLM` next to it. Same arguments and
seed -> byte-identical files.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Sizes used across the project: the default test model and the ~25M-parameter benchmark model.
TINY = {"hidden": 128, "intermediate": 256, "layers": 2, "heads": 4, "head_dim": 32}
SMALL_25M = {"hidden": 512, "intermediate": 1152, "layers": 8, "heads": 8, "head_dim": 64}

_WORDS = (
    "the a an and or but if then because so not no yes is are was were be been being have has had do "
    "does did will would can could should may might must I you he she it we they me him her us them my "
    "your his its our their this that these those who what which when where why how all some any each "
    "every many much more most few less other another same different old young new good bad great small "
    "large long short high low man woman men women boy girl person people child children friend family "
    "mother father son daughter husband wife teacher doctor nurse lawyer engineer student worker manager "
    "neighbor stranger group community religion church mosque temple christian muslim jewish hindu "
    "buddhist atheist black white asian african american european latino hispanic gay straight lesbian "
    "disabled blind deaf wheelchair poor rich income money bank loan credit default pay month year day "
    "week time age gender race sex male female toxic comment sentence stereotype opinion answer question "
    "choice option predict describe assume continue text following judge whether reflects harmful "
    "helpful assistant task response description person greater less equal than unknown determined "
    "cannot tell enough information likely think suppose school work home city country street car phone "
    "walk talk say said ask asked help want need like know see saw go went come came make made take took "
    "give gave find found look looked feel felt try tried leave left call called after before during "
    "while about over under between into through with without from for to of in on at by up down out "
    "off again still just only also very too here there now then today yesterday tomorrow"
).split()
_PUNCT = (".", ".", ".", "?", "!", ",", ";", ":")
_SYLLABLES = "ka mo ri tu sen val dor ith ex pla qua zin bro fel gar hum jen lux nor pic sto wey".split()


def generated_corpus(seed: int, n_sentences: int = 6000) -> list[str]:
    """English-like sentences with the punctuation, digits and quotes benchmark prompts use."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        words = [
            rng.choice(_WORDS) if rng.random() < 0.85 else "".join(rng.choices(_SYLLABLES, k=rng.randint(2, 3)))
            for _ in range(rng.randint(3, 18))
        ]
        words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 100)))
        sentence = " ".join(words) + rng.choice(_PUNCT)
        if rng.random() < 0.1:
            sentence = f'"{sentence}"' if rng.random() < 0.5 else f"\u201c{sentence}\u201d it\u2019s"
        if rng.random() < 0.1:
            sentence = f"{rng.randint(1, 4)}. {sentence}\n\n"
        lines.append(sentence)
    return lines


def build_tokenizer(seed: int = 0, vocab_size: int = 2000, extra_texts: Iterable[str] = ()):
    """A byte-level BPE `PreTrainedTokenizerFast` with a ChatML template; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    # Untrimmed offsets: a token's span includes the whitespace merged into it (prompts.py relies on it).
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*generated_corpus(seed), *extra_texts], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    hidden: int = TINY["hidden"],
    intermediate: int = TINY["intermediate"],
    layers: int = TINY["layers"],
    heads: int = TINY["heads"],
    head_dim: int = TINY["head_dim"],
    vocab: int = 2000,
    extra_texts: Iterable[str] = (),
    initializer_range: float = 0.1,
) -> Path:
    """Build and save the tokenizer and a random `LlamaForCausalLM`; returns the folder.

    Every Linear input width (hidden, heads*head_dim, intermediate) must be a multiple of 128 so
    group-128 quantization applies; head_dim >= 32 because vLLM's CPU attention needs it. The
    initializer range is larger than usual so the random model's next-token distributions are
    peaked enough for choice probabilities (and their changes under quantization) to differ.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for name, width in (("hidden", hidden), ("heads*head_dim", heads * head_dim), ("intermediate", intermediate)):
        if width % 128:
            raise ValueError(f"tiny model: {name}={width} must be a multiple of 128 (group-128 quantization)")
    if head_dim < 32:
        raise ValueError(f"tiny model: head_dim={head_dim} must be >= 32 (vLLM CPU attention)")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed=seed, vocab_size=vocab, extra_texts=extra_texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        max_position_embeddings=4096,
        initializer_range=initializer_range,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out

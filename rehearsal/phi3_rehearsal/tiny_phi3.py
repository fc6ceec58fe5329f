"""Build a tiny random-initialized Phi-3 with a locally trained tokenizer.

The folder it writes loads exactly like a real Phi-3 checkpoint (``AutoModelForCausalLM`` /
``AutoTokenizer``), with Phi-3's special tokens and the stock Phi-3-mini chat template, so tests
and the demo run the real loading path without downloading anything.

    python scripts/make_tiny_phi3.py OUT [--hidden-size 64] [--layers 2] [--heads 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: torch and transformers load only when a model is built
    from transformers import PreTrainedTokenizerFast

# The stock Phi-3-mini-4k-instruct template, character for character: TRL recognises it and
# swaps in its assistant-masking twin, which is what the trainer relies on.
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

UNK, BOS, EOS_SENTENCE = "<unk>", "<s>", "</s>"
END_OF_TEXT, END_OF_TURN = "<|endoftext|>", "<|end|>"
ROLE_TOKENS = ["<|assistant|>", "<|system|>", "<|user|>"]
SPECIAL_TOKENS = [UNK, BOS, EOS_SENTENCE, END_OF_TEXT, *ROLE_TOKENS, END_OF_TURN]

# Enough varied text that byte-level BPE learns ordinary English and digit merges.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "You are a helpful assistant. Answer briefly and correctly.",
    "Question: how many days are in a week? Answer: seven.",
    "Translate to French: good morning. Bonjour.",
    "Add the numbers 12 and 30. The sum is 42.",
    "Azure Machine Learning runs training jobs on GPU compute clusters.",
    "Phi-3 is a small language model from Microsoft.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 plus minus equals",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ , . ; : ! ? ' \" ( ) - + * / =",
]


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[*ROLE_TOKENS, END_OF_TURN],
        model_max_length=4096,
        padding_side="right",
    )
    tokenizer.chat_template = PHI3_CHAT_TEMPLATE
    return tokenizer


def build(out: Path, hidden_size: int, layers: int, heads: int, vocab_size: int, seed: int) -> Path:
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(vocab_size)

    def token_id(token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)
        assert isinstance(found, int), token
        return found

    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=token_id(BOS),
        eos_token_id=token_id(END_OF_TEXT),
        pad_token_id=token_id(END_OF_TEXT),
        tie_word_embeddings=False,
    )
    model = Phi3ForCausalLM(config)
    # Like the real checkpoints: generation ends on end-of-text or on end-of-turn.
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[
            tokenizer.convert_tokens_to_ids(END_OF_TEXT),
            tokenizer.convert_tokens_to_ids(END_OF_TURN),
        ],
        pad_token_id=config.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("out", type=Path, help="folder to write the model and tokenizer into")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.hidden_size % args.heads:
        parser.error(f"--hidden-size {args.hidden_size} must be divisible by --heads {args.heads}")
    out = build(args.out, args.hidden_size, args.layers, args.heads, args.vocab_size, args.seed)
    summary = {"path": str(out.resolve()), "files": sorted(p.name for p in out.iterdir())}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`mmpt tokenizer`: the embedded byte-level BPE, and adding the sentinels to any tokenizer.

    mmpt tokenizer --pairs pairs.jsonl --vocab-size 8192 --out runs/tokenizer

The trained tokenizer is the laptop default; real runs use the backbone's own tokenizer, to which
`add_sentinels` adds whatever of `<comments> <python> <eot> <mask>` (and a pad) it lacks.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mmpt.cli import command_parser
from mmpt.data.pairs import check_pairs_file, load_pairs
from mmpt.hub import HubMiss, from_hub
from mmpt.modality import COMMENTS, EOT, MASK, PAD, PYTHON, SENTINELS


def _texts(pairs_path: Path) -> Iterator[str]:
    """Docstrings and code of every pair, each as its own training text."""
    check_pairs_file(pairs_path)
    dataset = load_pairs(pairs_path)
    for batch in dataset.iter(batch_size=1000):
        yield from batch["docstring"]
        yield from batch["code"]


def train_tokenizer(pairs_path: str | Path, vocab_size: int, out_dir: str | Path):
    """Train a byte-level BPE on the pairs and save it where `AutoTokenizer.from_pretrained` finds it.

    The sentinels take the first ids (0..4) and are special tokens, so they never split and
    `<pad>` is the pad token.
    """
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SENTINELS):
        raise ValueError(f"vocab_size {vocab_size} is below the 256 bytes plus {len(SENTINELS)} sentinels")
    bpe = Tokenizer(models.BPE())
    # add_prefix_space=False: " if" and "if" stay distinct tokens, as in GPT-2-style code tokenizers
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SENTINELS), initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(_texts(Path(pairs_path)), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOT,
        pad_token=PAD,
        mask_token=MASK,
        extra_special_tokens=[COMMENTS, PYTHON],
    )
    tokenizer.model_max_length = 1 << 30  # rows are cut by prepare's max_seq_length, not here
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def synthetic_tokenizer(vocab_size: int, out_dir: str | Path):
    """A byte-level BPE of exactly `vocab_size` ids without training data or sentinels, saved in `out_dir`.

    Stands in for a real backbone's tokenizer where only its size matters (real-shape runs on CPU):
    the 256 bytes, then every two-byte token, then three-byte tokens (a two-byte token plus a byte)
    until the size is reached; `<|endoftext|>` is the last id and the eos. Like a hub tokenizer it
    lacks the sentinels, so `add_sentinels` appends them after it.
    """
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    if not len(alphabet) < vocab_size <= len(alphabet) * (1 + len(alphabet) * (1 + len(alphabet))):
        raise ValueError(f"vocab_size must lie in 257..{len(alphabet) ** 3}, got {vocab_size}")
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    pairs = ((a, b) for a in alphabet for b in alphabet)
    triples = ((a + b, c) for a in alphabet for b in alphabet for c in alphabet)
    for left, right in itertools.chain(pairs, triples):
        if len(vocab) == vocab_size - 1:
            break
        vocab[left + right] = len(vocab)
        merges.append((left, right))
    vocab["<|endoftext|>"] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tokenizer.model_max_length = 1 << 30
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def add_sentinels(tokenizer):
    """Add the sentinels `tokenizer` lacks as special tokens (never split); set a pad if it has none.

    `<pad>` is added only when the tokenizer has no pad token of its own. Returns the tokenizer
    (modified in place); callers resize the model's embeddings to `len(tokenizer)`.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in (COMMENTS, PYTHON, EOT, MASK) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    return tokenizer


def load_tokenizer(name_or_dir: str, sentinels: bool = True, option: str = "--tokenizer"):
    """`AutoTokenizer.from_pretrained(name_or_dir)` (fast only) with the sentinels added (unless not `sentinels`).

    A hub name the hub cannot give is a one-line `HubMiss` naming `option`, how the name was given."""
    from transformers import AutoTokenizer

    try:
        with from_hub(name_or_dir, option):
            tokenizer = AutoTokenizer.from_pretrained(name_or_dir)
    except HubMiss:
        raise
    except (OSError, ValueError) as e:  # a local folder without (readable) tokenizer files
        raise ValueError(f"{option}: cannot load a tokenizer from {name_or_dir!r} ({' '.join(str(e).split())})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {name_or_dir!r} is not a fast (Rust) tokenizer; prepare needs one")
    return add_sentinels(tokenizer) if sentinels else tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("mmpt tokenizer", __doc__.split("\n")[0])
    parser.add_argument("--pairs", required=True, help="pairs file (.jsonl/.json/.parquet)")
    parser.add_argument("--vocab-size", type=int, required=True, help="tokens in the vocabulary, sentinels included")
    parser.add_argument("--out", required=True, help="folder for the tokenizer files")
    args = parser.parse_args(argv)
    try:
        tokenizer = train_tokenizer(args.pairs, args.vocab_size, args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmpt tokenizer: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": args.out, "vocab_size": len(tokenizer)}))
    return 0

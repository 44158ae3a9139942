"""A small, deterministic word-level tokenizer so that text benchmarks (``sglang.bench_serving``) can drive the
dummy-weight models of ``configs/models/`` fully offline.

Why not a real tokenizer: none ships with the installed packages (transformers, tokenizers, sglang carry no
``tokenizer.json``; tiktoken would download its BPE file), and Llama-3's is a gated download. Why word-level:

* every id the dummy model can sample (``0 <= id < vocab_size``, 128256 for Llama-3) must decode to visible text,
  so that each streamed token shows up in SGLang's ``text`` and bench_serving times TTFT/ITL at the token it came
  (a byte-level BPE would hold back partial UTF-8 and print nothing for unknown ids);
* ``encode(decode(ids)) == ids`` for any ids: bench_serving builds prompts by decoding random vocabulary ids and the
  server re-encodes them, so prompt lengths stay exact (tested);
* equal text gives equal ids, so SGLang's radix cache sees exactly the sharing the dataset built in.

Vocabulary: the plain-English words bench_serving itself writes into prompts (its Mooncake replay, warm-up and
chat fallback), the ten digits and common punctuation marks, one token each, then generated lower-case words
(``"q" + letters``) up to ``vocab_size``. Pre-tokenization splits on white space and punctuation and puts every digit
in its own token (bench_serving writes trace hash ids as ``"123hi hi ..."``: individual digits keep distinct ids
distinct). Decoding joins tokens with one space. Words outside the vocabulary map to the token ``unk`` (a normal
word: no special tokens at all, so nothing is skipped on decode and nothing is added on encode).

``build_served_model(config_dir, out_dir)`` writes a model directory: the model's ``config.json`` (plus a
``transformers_version`` key; optionally a longer ``max_position_embeddings``) and
``tokenizer.json`` and ``tokenizer_config.json`` (about 2 MB, generated in about a second, never committed).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterator
from pathlib import Path

#: Bumped whenever the vocabulary or the pipeline changes (part of the served-model directory's identity).
TOKENIZER_VERSION = 1
UNK = "unk"

#: Words that bench_serving 0.5.17 writes into its prompts (datasets/mooncake.py, serving.py warm-up, the chat
#: fallback "role: content"); each becomes one token so that those prompts tokenize without ``unk``.
BENCH_SERVING_WORDS: tuple[str, ...] = (
    "user", "assistant", "system", "Round", "hi", "Tell", "me", "a", "story", "based", "on", "this", "context",
    "Can", "you", "tell", "detailed", "in", "words",
)
PUNCTUATION: tuple[str, ...] = tuple(string.punctuation)
DIGITS: tuple[str, ...] = tuple(string.digits)


def _generated_words() -> Iterator[str]:
    """``qa, qb, ..., qz, qaa, ...``: lower-case letters only (so pre-tokenization never splits them)."""
    letters = string.ascii_lowercase
    width = 1
    while True:
        n = len(letters) ** width
        for i in range(n):
            chars = []
            for _ in range(width):
                i, r = divmod(i, len(letters))
                chars.append(letters[r])
            yield "q" + "".join(reversed(chars))
        width += 1


def vocabulary(vocab_size: int) -> list[str]:
    """The ``vocab_size`` tokens, id order."""
    fixed = [UNK, *BENCH_SERVING_WORDS, *DIGITS, *PUNCTUATION]
    if len(set(fixed)) != len(fixed):
        raise AssertionError("duplicate fixed tokens")
    if vocab_size < len(fixed) + 1:
        raise ValueError(f"vocab_size {vocab_size} < {len(fixed) + 1}")
    seen = set(fixed)
    words = list(fixed)
    for w in _generated_words():
        if len(words) == vocab_size:
            break
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def tokenizer_json(vocab_size: int) -> dict:
    """The ``tokenizers`` JSON of the word-level tokenizer (built with the library, so its format is current)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(vocabulary(vocab_size))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Whitespace: \w+|[^\w\s]+ ; Punctuation then splits runs such as ".." into single marks; Digits: one per token.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True),
    ])
    # WordPiece's decoder with an unused prefix: joins tokens with one space and, with cleanup off, changes nothing.
    tok.decoder = decoders.WordPiece(prefix="\x00", cleanup=False)
    return json.loads(tok.to_str())


TOKENIZER_CONFIG: dict[str, object] = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "clean_up_tokenization_spaces": False,
    "model_max_length": 1_048_576,
    "add_bos_token": False,
    "add_eos_token": False,
}


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def build_served_model(config_dir: Path, out_dir: Path, max_position_embeddings: int | None = None) -> Path:
    """Write ``out_dir`` = ``config_dir/config.json`` + this tokenizer (vocab size from the config); returns
    ``out_dir``. Idempotent: files already equal are left alone (their mtimes too).

    ``max_position_embeddings``: written into the config when given. SGLang sizes the model's RoPE table by it (a
    ``--context-length`` above it, even when allowed, indexes past that table); with dummy weights and no RoPE
    scaling, positions below the old value get the same rotation as before."""
    config = json.loads((Path(config_dir) / "config.json").read_text())
    if max_position_embeddings is not None:
        config["max_position_embeddings"] = int(max_position_embeddings)
    vocab_size = int(config["vocab_size"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # transformers 5 warns of a "Mistral regex" (and, for hub ids, asks the hub) when a local config.json has no
    # transformers_version; the key changes nothing else.
    config.setdefault("transformers_version", "5.0.0")
    _write_if_changed(out_dir / "config.json", json.dumps(config, indent=1) + "\n")
    _write_if_changed(out_dir / "tokenizer.json", json.dumps(tokenizer_json(vocab_size), ensure_ascii=False))
    _write_if_changed(out_dir / "tokenizer_config.json", json.dumps(TOKENIZER_CONFIG, indent=1) + "\n")
    return out_dir


def served_model_id(out_dir: Path) -> str:
    """Short hash of the served model directory's files (config + tokenizer): recorded with every result."""
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        h.update(name.encode())
        h.update((Path(out_dir) / name).read_bytes())
    return h.hexdigest()[:12]

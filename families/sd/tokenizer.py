"""The CLIP BPE tokenizer of every SD text encoder, built offline from the vocabulary shipped here.

The vocabulary (``vocab/bpe_simple_vocab_16e6.txt.gz``, OpenAI CLIP's, MIT) is read the way CLIP reads it:
the merges are lines 1 … 48,894 of the file; the tokens are the 256 byte characters, the same with the
end-of-word mark ``</w>``, one per merge, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
transformers' fast ``CLIPTokenizer`` is built from them with ``vocab=``/``merges=`` (transformers 5
silently builds a 2-token vocabulary from the 4.x ``vocab_file=``/``merges_file=``), and the original
CLIP text cleaning (``ftfy.fix_text``, a double ``html.unescape``, whitespace collapsed), which
transformers 5 skips, runs first, so ids equal the original tokenizer's.

Padding differs by encoder: SD 1.x's CLIP ViT-L pads with ``<|endoftext|>``, the OpenCLIP encoders of
SD 2.x and SDXL's second encoder with ``!`` (id 0).
"""

from __future__ import annotations

import gzip
import html
import re
from functools import cache
from pathlib import Path
from typing import Any

import ftfy

VOCAB_FILE = Path(__file__).parent / "vocab" / "bpe_simple_vocab_16e6.txt.gz"
CONTEXT = 77  # tokens per encoder window: BOS + 75 + EOS
CHUNK = CONTEXT - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
LONG_WORD = 8  # a word of more tokens may be split across chunks; shorter words move whole (as ComfyUI)


def clean(text: str) -> str:
    """CLIP's own text cleaning: fix mojibake, unescape HTML twice, collapse whitespace."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable character table, in byte order of the vocabulary."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in printable] + [chars[b] for b in range(256) if b not in printable]


@cache
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.decompress(VOCAB_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]  # 48,894 pairs
    byte_chars = _byte_chars()
    tokens = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m) for m in merges), BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, [(a, b) for a, b in merges]


@cache
def clip_tokenizer(pad_token: str) -> Any:
    """transformers' ``CLIPTokenizer`` over the shipped vocabulary, padding with ``pad_token``
    (``"<|endoftext|>"`` for CLIP ViT-L / SD 1.x, ``"!"`` for the OpenCLIP encoders)."""
    from transformers import CLIPTokenizer

    vocab, merges = _vocab_and_merges()
    if pad_token not in vocab:
        raise ValueError(f"pad token {pad_token!r} is not in the CLIP vocabulary")
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]  # pairs, as tokenizers' BPE takes them
        pad_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        model_max_length=CONTEXT,
    )
    # Set after construction: a pad token given to the constructor becomes an added special token that
    # is matched inside the text, so "horse!!!" would encode as three pads instead of the merge "!!!".
    tok.pad_token = pad_token
    return tok


def encode(text: str, pad_token: str) -> list[int]:
    """One window as the original pipelines build it: BOS, tokens cut to 75, EOS, padded to 77."""
    tok = clip_tokenizer(pad_token)
    ids: list[int] = tok(clean(text), padding="max_length", max_length=CONTEXT, truncation=True)["input_ids"]
    return ids


def token_chunks(text: str, pad_token: str, chunk: int = CHUNK) -> list[list[int]]:
    """A prompt of any length as windows of ``chunk`` tokens, each BOS + tokens + EOS padded to chunk+2.

    As ComfyUI does for prompts over 75 tokens: a word that does not fit in the current window moves
    whole to the next one, unless it is longer than 8 tokens, which is split. A prompt of at most
    ``chunk`` tokens gives exactly one window, equal to :func:`encode`'s truncation.
    """
    ids, _ = weighted_chunks([(text, 1.0)], pad_token, chunk)
    return ids


def weighted_chunks(
    segments: list[tuple[str, float]], pad_token: str, chunk: int = CHUNK
) -> tuple[list[list[int]], list[list[float]]]:
    """:func:`token_chunks` of text segments with a weight each (ComfyUI's ``(word:1.2)`` emphasis):
    the windows' ids and a weight per id (1 for BOS, EOS and padding)."""
    tok = clip_tokenizer(pad_token)
    words: list[list[tuple[int, float]]] = [[]]
    for text, weight in segments:
        ids: list[int] = tok(clean(text), add_special_tokens=False, verbose=False)["input_ids"]
        for i, piece in zip(ids, tok.convert_ids_to_tokens(ids), strict=True):
            words[-1].append((i, weight))
            if piece.endswith("</w>"):
                words.append([])
    windows: list[list[tuple[int, float]]] = [[]]
    for word in (w for w in words if w):
        room = chunk - len(windows[-1])
        if len(word) > room and len(word) <= LONG_WORD:
            windows.append([])
        while word:
            room = chunk - len(windows[-1])
            if room == 0:
                windows.append([])
                room = chunk
            windows[-1].extend(word[:room])
            word = word[room:]
    pad = tok.convert_tokens_to_ids(pad_token)
    bos, eos = tok.convert_tokens_to_ids(BOS), tok.convert_tokens_to_ids(EOS)
    ids_out = [[bos, *(i for i, _ in w), eos] + [pad] * (chunk - len(w)) for w in windows]
    weights_out = [[1.0, *(x for _, x in w), 1.0] + [1.0] * (chunk - len(w)) for w in windows]
    return ids_out, weights_out

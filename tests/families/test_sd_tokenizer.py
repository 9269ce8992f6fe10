"""The offline CLIP tokenizer gives the original CLIP token ids (open_clip's SimpleTokenizer as reference)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from families.sd.tokenizer import CONTEXT, clip_tokenizer, encode, token_chunks

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "A PHOTOGRAPH Of An Astronaut, Riding; A Horse!!!",
    "",
    "   lots \t of\n\n whitespace   ",
    "café crème brûlée, naïve résumé",
    "a cat 🐱 wearing a 🎩 hat",
    "東京の夜景 and 北京",
    "it's what they're doin' and you'll've",
    "1234567 3.14159 0x1f 2026-11-28",
    "(masterpiece:1.2), [best quality], {highres}",
    "rock &amp;amp; roll &lt;3 &quot;quoted&quot;",
    "\u201ccurly quotes\u201d \uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \ufb01ne \ufb02ower",
    ", ".join(f"word{i} detail" for i in range(60)),  # far over 77 tokens: truncated
]


def _open_clip_tokenizer_module() -> ModuleType:
    """open_clip's tokenizer.py loaded on its own (importing open_clip needs torchvision, absent here)."""
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations, (
        "the reference needs open-clip-torch==3.3.0 installed with --no-deps (make setup does it)"
    )
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer_reference", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> object:
    return _open_clip_tokenizer_module().SimpleTokenizer(context_length=CONTEXT)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_equal_open_clip_with_pad_zero(reference: object, prompt: str) -> None:
    expected = reference(prompt)[0].tolist()  # type: ignore[operator]
    assert encode(prompt, "!") == expected


@pytest.mark.parametrize("prompt", PROMPTS)
def test_sd1_padding_uses_end_of_text(reference: object, prompt: str) -> None:
    expected = reference(prompt)[0].tolist()  # type: ignore[operator]
    n = expected.index(49407) + 1
    assert encode(prompt, "<|endoftext|>") == expected[:n] + [49407] * (CONTEXT - n)


def test_known_ids_without_a_reference() -> None:
    ids = encode("a photograph of an astronaut riding a horse", "<|endoftext|>")
    assert ids[:10] == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert encode("", "!")[:3] == [49406, 49407, 0]
    assert len(clip_tokenizer("!")) == 49408


def test_truncation_keeps_76_tokens_then_end_of_text() -> None:
    ids = encode(PROMPTS[-1], "!")
    assert len(ids) == CONTEXT and ids[0] == 49406 and ids[-1] == 49407 and 0 not in ids


def test_short_prompt_is_one_chunk_equal_to_truncation() -> None:
    for prompt in PROMPTS[:-1]:
        for pad in ("!", "<|endoftext|>"):
            assert token_chunks(prompt, pad) == [encode(prompt, pad)]


def test_long_prompt_chunks_cover_every_token_in_order() -> None:
    prompt = PROMPTS[-1]
    tok = clip_tokenizer("!")
    ids = tok(prompt, add_special_tokens=False, verbose=False)["input_ids"]
    chunks = token_chunks(prompt, "!")
    assert len(chunks) >= 2
    assert all(len(c) == CONTEXT and c[0] == 49406 for c in chunks)
    body = [t for c in chunks for t in c[1:] if t not in (49407, 0)]
    assert body == ids


def test_a_word_that_would_straddle_two_windows_moves_whole() -> None:
    assert len(token_chunks("a " * 74 + "photograph", "!")) == 1  # 74 + 1 tokens fit exactly
    chunks = token_chunks("a " * 74 + "xylophonists", "!")  # xy lo ph onists: 4 tokens, 1 place left
    assert len(chunks) == 2
    assert chunks[0][1:] == [320] * 74 + [49407, 0]
    assert chunks[1][:7] == [49406, 20023, 549, 745, 19659, 49407, 0]


def test_a_word_longer_than_eight_tokens_is_split_at_the_window_edge() -> None:
    chunks = token_chunks("a " * 74 + "supercalifragilisticexpialidocious", "!")  # 9 tokens
    assert len(chunks) == 2
    assert chunks[0][75] != 49407 and chunks[0][76] == 49407  # the first token fills the last place
    assert chunks[1][1:9] != [0] * 8 and chunks[1][9] == 49407

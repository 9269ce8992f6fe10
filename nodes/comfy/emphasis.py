"""ComfyUI's prompt emphasis: ``(word)`` ×1.1 per level, ``(word:1.5)`` sets 1.5, ``\\(`` is a literal.

``parse_emphasis("a (red:1.3) ((big)) cat")`` → ``[("a ", 1.0), ("red", 1.3), ("big", 1.21), (" cat", 1.0)]``.
Square brackets carry no meaning (that is A1111's syntax, not ComfyUI's). An unclosed ``(`` is taken
literally. The weights are applied by the text encoder (``SDText.encode_segments``).
"""

from __future__ import annotations

OPEN, CLOSE = "\x00\x01", "\x00\x02"  # stand-ins for escaped parentheses while parsing


def _groups(text: str) -> list[str]:
    """Top-level pieces: plain runs and balanced ``( … )`` groups (unbalanced text stays plain)."""
    out: list[str] = []
    depth, start, plain = 0, 0, ""
    for i, ch in enumerate(text):
        if ch == "(":
            if depth == 0:
                if plain:
                    out.append(plain)
                    plain = ""
                start = i
            depth += 1
        elif ch == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[start : i + 1])
        elif depth == 0:
            plain += ch
    if depth > 0:  # unclosed: the rest is literal
        plain += text[start:]
    if plain:
        out.append(plain)
    return out


def _weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for piece in _groups(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner, inner_weight = piece[1:-1], weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1 :])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out.extend(_weights(inner, inner_weight))
        else:
            out.append((piece, weight))
    return out


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Text → (segment, weight) pairs, in order; empty segments dropped, escapes resolved."""
    escaped = text.replace("\\(", OPEN).replace("\\)", CLOSE)
    pairs = _weights(escaped, 1.0)
    return [(s.replace(OPEN, "(").replace(CLOSE, ")"), w) for s, w in pairs if s]

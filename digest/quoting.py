"""Values quoted back in messages a person reads: as JSON, with every character that is not printable
escaped, so a quoted value can neither break the message's line (U+2028, U+0085 …) nor reorder it on
screen (U+202E and the other bidirectional controls), and clipped so a 10 MB value is not echoed."""

from __future__ import annotations

import json


def quoted(value: object, limit: int = 80) -> str:
    """``value`` as JSON ("AI; Agents", 130, null), at most ``limit`` characters, ending in … when clipped."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if not text.isprintable():
        text = "".join(char if char.isprintable() else _escape(char) for char in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)  # JSON spells a character past U+FFFF as a UTF-16 pair
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"

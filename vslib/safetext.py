"""File names made safe to print: control characters and undecodable bytes, escaped losslessly.

A file name may hold a newline (which would print a fake line of output), terminal escape
codes, or bytes that are not UTF-8 (Python keeps them as lone surrogates, which cannot be
printed or written as UTF-8 JSON). Introduced in chapter 5.
"""

from __future__ import annotations

import base64
import os
import unicodedata

__all__ = ["json_path", "printable_path"]

_SIMPLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


def _unsafe(char: str) -> bool:
    # Cc: C0/C1 controls and DEL; Cs: surrogates (undecodable bytes); Zl/Zp: line breaks.
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")


def printable_path(text: str) -> str:
    """``text`` as it is when it is safe to print, else a double-quoted, escaped form.

    Inside the quotes ``\\n``, ``\\t``, ``\\\\`` and ``\\"`` are the usual escapes, an
    undecodable byte is ``\\xNN`` and another control character ``\\u00NN``, so the line
    stays one line and the original name can be recovered. Introduced in chapter 5.
    """
    if not any(_unsafe(char) for char in text) and not text.startswith('"'):
        return text
    out = []
    for char in text:
        code = ord(char)
        if char in _SIMPLE:
            out.append(_SIMPLE[char])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif _unsafe(char):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def json_path(text: str) -> dict[str, str]:
    """JSON fields for a path: ``{"path": ...}``, plus ``"path_bytes"`` when it is not UTF-8.

    ``path`` is always valid Unicode (undecodable bytes become U+FFFD); ``path_bytes`` holds
    the file name's exact bytes in base64, so the file can still be opened. Introduced in
    chapter 5.
    """
    try:
        text.encode("utf-8")
        return {"path": text}
    except UnicodeEncodeError:
        raw = os.fsencode(text)
        return {"path": raw.decode("utf-8", errors="replace"), "path_bytes": base64.b64encode(raw).decode("ascii")}

"""JSON that YAML parsers read back verbatim: for template values and apply-patch+yaml bodies.

JSON is YAML — nearly. With ``ensure_ascii`` a character beyond Unicode's basic plane (an
emoji) becomes a surrogate-pair escape, which YAML refuses (PyYAML here, go-yaml in the API
server); without it, some characters JSON leaves raw are not read back as themselves: YAML's
non-printable characters (DEL, C1 controls, U+FFFE/FFFF) are refused and what YAML 1.1 treats
as line breaks or a byte-order mark (NEL, LINE/PARAGRAPH SEPARATOR, BOM) is folded or dropped.
So: no ``ensure_ascii``, and exactly those characters as ``\\uXXXX`` escapes, which JSON and
YAML read alike (JSON itself escapes C0 controls, quotes and backslash).
"""

from __future__ import annotations

import json
from typing import Any

_YAML_ESCAPES = {
    code: f"\\u{code:04x}" for code in (*range(0x7F, 0xA0), 0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF)
}


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` (same keyword arguments) whose text every YAML parser reads verbatim.

    Raises ``TypeError`` for what JSON cannot hold, ``UnicodeEncodeError`` for a string that is
    not valid Unicode (a lone surrogate), which neither JSON nor YAML can carry as UTF-8.
    """
    text = json.dumps(value, ensure_ascii=False, **kwargs).translate(_YAML_ESCAPES)
    text.encode("utf-8")
    return text

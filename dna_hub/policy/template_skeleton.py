"""Template skeletons: parse a profile template's YAML once per control flow, not per user.

Every ``{{ expression }}`` of a profile template is inserted as a JSON value (see
:mod:`dna_hub.policy.rendering`). While rendering, each inserted value is instead recorded and the
text gets a *token*, ``dnahubv<nonce>n<index>z`` (the nonce is random per process, so no
template text can contain one). The rendered text with tokens — the *skeleton* — then
depends only on the template's control flow (``{% if %}``, ``{% for %}``), never on a
value: it is parsed once (:func:`compile_skeleton`, a bounded LRU cache keyed by the
skeleton) into a :class:`Skeleton`, which builds each render's documents by putting the
recorded values where their tokens were.

The result is exactly what parsing the text with the values in place gives (the values'
JSON text where the tokens are, :func:`with_values`), because a skeleton is only compiled
when every token stands where that is provably so:

- a whole plain scalar, a mapping value or sequence item (``key: {{ x }}``) or a key
  (``{{ x }}: v``), possibly anchored, never tagged: the value itself, read the way YAML
  reads its JSON text (an exponent without a decimal point, ``1e+20``, is a string to YAML
  1.1; a key becomes a string, as JSON keeps it);
- inside a block scalar (``|``, ``>``): the value's JSON text, verbatim — JSON text has no
  line break, leading space or non-printable character that YAML would fold or refuse;
- in a comment: dropped, as its JSON text would be.

Anywhere else (quoted, ``prefix-{{ x }}``, a tag or an anchor name) :func:`compile_skeleton`
returns ``None`` and the caller parses :func:`with_values`' text as before; a skeleton that
is not valid YAML raises, and the caller parses the text with the values to report that
text's own error. Templates whose output can flow back into a value (macros, ``{% call %}``,
``{% filter %}`` and ``{% set %}`` blocks, ``self``, includes, recursive loops, autoescape)
are never rendered with tokens at all (:func:`skeleton_safe`).

Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from jinja2 import nodes

__all__ = [
    "TOKEN_PREFIX",
    "NotAValue",
    "Skeleton",
    "compile_skeleton",
    "skeleton_safe",
    "token",
    "with_values",
]

#: Starts every token of this process. Letters and digits only: a plain YAML string.
TOKEN_PREFIX = f"dnahubv{secrets.token_hex(8)}n"
_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"(\d+)z")

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: How a token's value goes into the document's JSON text.
_VALUE, _KEY, _SPLICE = 0, 1, 2

#: Distinct skeletons kept parsed (one per template and control flow taken).
CACHE_SIZE = 256

#: A JSON number YAML 1.1 does not read as one: an exponent without a decimal point.
_BARE_EXPONENT = re.compile(r"(?<![\w.])-?\d+[eE]")


def token(index: int) -> str:
    """The token standing for the ``index``-th value inserted while rendering."""
    return f"{TOKEN_PREFIX}{index}z"


def with_values(skeleton: str, texts: Sequence[str]) -> str:
    """The skeleton with each token replaced by its value's JSON text: the rendered text."""
    return _TOKEN.sub(lambda m: texts[int(m[1])], skeleton)


class NotAValue(ValueError):
    """A value cannot stand where its token does (a list or mapping as a mapping key)."""


# --- which templates may be rendered as skeletons -------------------------------------------

#: Statements whose output goes straight to the rendered text, never into a value.
_SAFE_STATEMENTS = (nodes.Output, nodes.For, nodes.If, nodes.With, nodes.Assign, nodes.Scope)
#: Names through which a template reads rendered output (blocks, macro callers).
_OUTPUT_NAMES = {"self", "super", "caller", "varargs", "kwargs"}


def skeleton_safe(tree: nodes.Template) -> bool:
    """Whether rendered output can never flow back into a value of this template: then its
    skeleton's control flow, and so its text, is the same as with the values in place."""
    for node in tree.find_all(nodes.Node):
        if isinstance(node, nodes.Stmt) and not isinstance(node, _SAFE_STATEMENTS):
            return False  # macro, call/filter/set block, block, include, import, autoescape
        if isinstance(node, nodes.For) and node.recursive:
            return False  # loop(...) returns rendered output
        if isinstance(node, nodes.Name) and node.name in _OUTPUT_NAMES:
            return False
    return True


# --- compiled skeletons ----------------------------------------------------------------------


@dataclass(frozen=True)
class Skeleton:
    """A parsed skeleton: the JSON text of its documents (a JSON array), cut at the tokens."""

    #: Literal JSON text and (value index, how) slots, in order.
    parts: tuple[str | tuple[int, int], ...]

    def build(self, texts: Sequence[str]) -> list[Any]:
        """Fresh documents with the values in place (``texts``: each value's JSON text)."""
        pieces = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
            else:
                index, how = part
                pieces.append(_insert(texts[index], how))
        return json.loads("".join(pieces))


def _insert(text: str, how: int) -> str:
    """A value's JSON text as it goes into the document's JSON text."""
    if how == _SPLICE:
        return json.dumps(text)[1:-1]  # the JSON text itself, inside a JSON string
    first = text[0]
    if first == '"':
        return text  # a string, as a value or a key
    if first in "[{":
        if how == _KEY:
            raise NotAValue("a list or mapping cannot be a mapping key")
        if _BARE_EXPONENT.search(text):
            text = json.dumps(json.loads(text, parse_float=_yaml_float))
        return text
    # a number, true, false or null
    if first in "-0123456789" and "." not in text and ("e" in text or "E" in text):
        return json.dumps(text)  # 1e+20: a string to YAML 1.1
    return text if how == _VALUE else json.dumps(text)  # a key is a string in JSON


def _yaml_float(text: str) -> float | str:
    return float(text) if "." in text else text


@functools.lru_cache(maxsize=CACHE_SIZE)
def compile_skeleton(skeleton: str) -> Skeleton | None:
    """Parse a skeleton once. ``None``: a token stands where only the text with the values
    in place says what it means (see the module's docstring). Raises ``yaml.YAMLError``."""
    slots = _token_slots(skeleton)
    if slots is None:
        return None
    documents = [d for d in yaml.load_all(skeleton, Loader=_SafeLoader)]
    try:
        text = json.dumps(documents, separators=(",", ":"))
    except (TypeError, ValueError):  # a date, binary, a set, a recursive alias
        return None
    parts: list[str | tuple[int, int]] = []
    position = 0
    for match in _TOKEN.finditer(text):
        index = int(match[1])
        how = slots.get(index)
        if how is None:
            return None  # cannot happen: every token in a document has a slot
        start, end = match.span()
        if how != _SPLICE:
            if text[start - 1] != '"' or text[end] != '"':
                return None  # cannot happen: the whole string is the token
            start, end = start - 1, end + 1
        parts.append(text[position:start])
        parts.append((index, how))
        position = end
    parts.append(text[position:])
    return Skeleton(parts=tuple(p for p in parts if p != ""))


def _token_slots(skeleton: str) -> dict[int, int] | None:
    """How each token is used, from the YAML events; ``None`` if one is used elsewhere."""
    slots: dict[int, int] = {}
    # per open collection: is the next node a mapping key? (None: a sequence)
    expecting_key: list[bool | None] = []

    def done() -> None:
        if expecting_key and expecting_key[-1] is not None:
            expecting_key[-1] = not expecting_key[-1]

    loader = _SafeLoader(skeleton)
    try:
        while loader.check_event():
            event = loader.get_event()
            anchor = getattr(event, "anchor", None)
            tag = getattr(event, "tag", None)
            if (anchor and TOKEN_PREFIX in anchor) or (tag and TOKEN_PREFIX in tag):
                return None
            if isinstance(event, yaml.ScalarEvent):
                found = _TOKEN.findall(event.value)
                if found:
                    if event.style in (None, ""):
                        if tag is not None or event.value != token(int(found[0])):
                            return None  # tagged, or text around the token
                        slots[int(found[0])] = _KEY if expecting_key[-1:] == [True] else _VALUE
                    elif event.style in ("|", ">"):
                        slots.update((int(i), _SPLICE) for i in found)
                    else:
                        return None  # quoted
                done()
            elif isinstance(event, yaml.AliasEvent):
                done()
            elif isinstance(event, yaml.MappingStartEvent):
                expecting_key.append(True)
            elif isinstance(event, yaml.SequenceStartEvent):
                expecting_key.append(None)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                expecting_key.pop()
                done()
    finally:
        loader.dispose()
    return slots

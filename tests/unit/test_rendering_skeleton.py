"""Rendering parses each template's YAML once per control flow (its skeleton), and a
RenderedProfile keeps its manifests as text the garbage collector never traverses.

Not timed: these pin the causes (YAML parses per render, GC-tracked objects per in-flight
spawn), not a duration."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from dna_hub.policy import template_skeleton, yaml_json
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import RenderedProfile, TemplateError, render_profile
from tests.unit.test_rendering import HOSTILE_CLAIMS, all_optional, context, shape, write

#: YAML and JSON metacharacters, a line break and an emoji.
METACHARACTERS = "\": {}[]#&*!|>'%@\n😀"


def tracked_objects(root: Any) -> int:
    """GC-tracked objects reachable from ``root`` (classes aside: they are shared)."""
    seen: set[int] = set()
    stack = [root]
    count = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        if gc.is_tracked(obj):
            count += 1
        stack.extend(gc.get_referents(obj))
    return count


# --- a compact RenderedProfile -----------------------------------------------------------


def test_a_rendered_profile_holds_almost_nothing_the_gc_traverses() -> None:
    rendered = render_profile(all_optional())
    assert tracked_objects(rendered) <= 3
    # the counter counts: the same manifests as objects are dozens of dicts and lists
    assert tracked_objects(rendered.objects) > 50


def test_a_rendered_profile_hands_out_copies_and_stays_frozen() -> None:
    rendered = render_profile(context())
    profile = rendered.profile
    profile["metadata"]["name"] = "changed"
    rendered.namespaced[0]["kind"] = "Changed"
    rendered.objects.clear()
    assert rendered.profile["metadata"]["name"] == "kubeflow-alice"
    assert rendered.namespaced[0]["kind"] == "PodDefault"
    assert len(rendered.objects) == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        rendered.digest = "x"  # type: ignore[misc]
    # hashable and equal by content; pickles as its text
    again = render_profile(context())
    assert again == rendered and hash(again) == hash(rendered)
    assert pickle.loads(pickle.dumps(rendered)) == rendered
    text = len(rendered.profile_json) + len(rendered.namespaced_json) + len(rendered.digest)
    assert len(pickle.dumps(rendered)) < text + 300


def test_of_builds_a_rendered_profile_with_its_digest() -> None:
    rendered = render_profile(all_optional())
    same = RenderedProfile.of(rendered.profile, rendered.namespaced)
    assert same == rendered
    profile = rendered.profile
    profile["metadata"]["annotations"]["x"] = "y"
    changed = RenderedProfile.of(profile, rendered.namespaced)
    assert changed.profile["metadata"]["annotations"]["x"] == "y"
    assert changed.digest != rendered.digest


# --- one YAML parse per skeleton ---------------------------------------------------------

ADMIN_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: who
  namespace: {{ namespace }}
  annotations: {user: {{ username }}, port: {{ notebook_port }}}
data:
  {{ username }}: a key
  groups: {{ groups }}
  script: |
    echo {{ username }}
"""


@pytest.fixture
def yaml_parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The texts YAML parses into documents, from a cold skeleton cache."""
    template_skeleton.compile_skeleton.cache_clear()
    parsed: list[str] = []
    load_all = yaml.load_all

    def counting(stream: str, Loader: Any) -> Any:
        parsed.append(stream)
        return load_all(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load_all", counting)
    yield parsed
    template_skeleton.compile_skeleton.cache_clear()


def test_the_same_control_flow_parses_yaml_once(tmp_path: Path, yaml_parses: list[str]) -> None:
    write(tmp_path, "50-admin.yaml.j2", ADMIN_TEMPLATE)
    alice = render_profile(context(), [tmp_path])
    parses = len(yaml_parses)
    assert 0 < parses <= 9  # at most one per template file
    assert not any("alice" in text for text in yaml_parses)  # values are never parsed
    bob = render_profile(context("bob", owner="bob@example.com", groups=("x",)), [tmp_path])
    assert len(yaml_parses) == parses
    assert bob.profile["spec"]["owner"]["name"] == "bob@example.com"
    assert [shape(o) for o in bob.objects[:-1]] == [shape(o) for o in alice.objects[:-1]]
    assert configmap(bob, "who")["data"] == {
        "bob": "a key",
        "groups": ["x"],
        "script": 'echo "bob"\n',
    }
    # another control flow (a quota, the legacy objects): new skeletons, parsed once each
    render_profile(all_optional(), [tmp_path])
    more = len(yaml_parses)
    assert more > parses
    render_profile(all_optional(username="carol"), [tmp_path])
    assert len(yaml_parses) == more


@pytest.mark.parametrize("name", [METACHARACTERS, *HOSTILE_CLAIMS[2:6]])
def test_metacharacters_stay_verbatim_and_never_change_structure(
    tmp_path: Path, yaml_parses: list[str], name: str
) -> None:
    write(tmp_path, "50-admin.yaml.j2", ADMIN_TEMPLATE)
    reference = render_profile(context(), [tmp_path])
    parses = len(yaml_parses)
    rendered = render_profile(context(name, owner=name, groups=(name, "ok")), [tmp_path])
    assert len(yaml_parses) == parses  # the very same skeletons: structure is the template's
    # (the ConfigMap's data, keyed by the name, in full below)
    assert [shape(o) for o in rendered.objects[:-1]] == [shape(o) for o in reference.objects[:-1]]
    profile = rendered.profile
    assert profile["spec"]["owner"]["name"] == name
    assert profile["metadata"]["annotations"]["dna-hub.io/hub-username"] == name
    assert profile["metadata"]["name"] == namespace_for(name)
    cm = configmap(rendered, "who")
    assert shape(cm["metadata"]) == shape(configmap(reference, "who")["metadata"])
    assert cm["metadata"]["annotations"] == {"user": name, "port": 8888}
    assert cm["data"] == {
        name: "a key",
        "groups": [name, "ok"],
        "script": f"echo {yaml_json.dumps(name)}\n",  # JSON text in a block scalar
    }


def test_renders_in_threads_keep_their_own_values() -> None:
    names = [f"user{i}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda n: render_profile(context(n, owner=n)), names))
    for name, rendered in zip(names, results, strict=True):
        assert rendered == render_profile(context(name, owner=name))
        assert rendered.profile["spec"]["owner"]["name"] == name


# --- values anywhere else: as the text with the values in place gives them ----------------

EMBEDDED_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: embedded
  namespace: {{ namespace }}
data:
  prefixed: prefix-{{ username }}
  single: '{{ notebook_port }}'
  double: "{{ notebook_port }}"
  suffixed: {{ notebook_port }}-x
  block: |
    user={{ username }}
    groups={{ groups }}
  folded: >
    {{ username }}
    and {{ notebook_port }}
  whole: {{ username }}
  {{ notebook_port }}: a number as a key
  exponent: {{ extra.big }}
  numbers: {{ extra.many }}
  flow: [{{ username }}, {{ notebook_port }}]
"""

#: What the text with the values in place (the JSON text of each) always gave.
EMBEDDED_DATA = {
    "prefixed": 'prefix-"alice"',
    "single": "8888",
    "double": "8888",
    "suffixed": "8888-x",
    "block": 'user="alice"\ngroups=["data-science"]\n',
    "folded": '"alice" and 8888\n',
    "whole": "alice",
    "8888": "a number as a key",  # YAML's 8888, a string in JSON
    "exponent": "1e+20",  # YAML 1.1 reads 1e+20 as a string
    "numbers": ["1e+20", 2.5, {"k": 0.5}],
    "flow": ["alice", 8888],
}

EXTRA = {"big": 1e20, "many": [1e20, 2.5, {"k": 0.5}]}


def configmap(rendered: RenderedProfile, name: str) -> dict[str, Any]:
    (cm,) = [o for o in rendered.namespaced if o["metadata"]["name"] == name]
    return cm


def test_a_value_inside_a_larger_scalar_is_its_json_text(tmp_path: Path) -> None:
    write(tmp_path, "50-admin.yaml.j2", EMBEDDED_TEMPLATE)
    rendered = render_profile(context(extra=EXTRA), [tmp_path])
    assert configmap(rendered, "embedded")["data"] == EMBEDDED_DATA


def test_output_that_flows_into_a_value_renders_as_text(tmp_path: Path) -> None:
    # a macro's output is text with its values in place; a filter block filters that text
    write(
        tmp_path,
        "50-admin.yaml.j2",
        '{% macro quoted(x) %}{{ x }}{% endmacro -%}\n{% filter replace("Who", "who") %}'
        + EMBEDDED_TEMPLATE.replace("name: embedded", 'name: {{ "Who" }}')
        + "  macro: {{ quoted(username) }}\n{% endfilter %}",
    )
    rendered = render_profile(context(extra=EXTRA), [tmp_path])
    assert configmap(rendered, "who")["data"] == {**EMBEDDED_DATA, "macro": '"alice"'}


@pytest.mark.parametrize(
    ("source", "safe"),
    [
        ("a: {{ x }}\n{% if y %}b: {{ y }}{% endif %}{% for i in z %}- {{ i }}{% endfor %}", True),
        ("{% set v = x ~ 'a' %}{% with w = 1 %}{{ v }}{{ w }}{% endwith %}", True),
        ("{% macro m() %}x{% endmacro %}{{ m() }}", False),
        ("{% set v %}{{ x }}{% endset %}{{ v }}", False),
        ("{% filter upper %}{{ x }}{% endfilter %}", False),
        ("{% for i in x recursive %}{{ loop(i) }}{% endfor %}", False),
        ("{% block b %}{{ x }}{% endblock %}{{ self.b() }}", False),
        ("{% include 'other.yaml.j2' %}", False),
        ("{% autoescape true %}{{ x }}{% endautoescape %}", False),
    ],
)
def test_only_templates_whose_output_stays_output_render_as_skeletons(
    source: str, safe: bool
) -> None:
    tree = jinja2.Environment().parse(source)
    assert template_skeleton.skeleton_safe(tree) is safe


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  nan: {{ extra.nan }}\n", "cannot insert the value nan"),
        ("  {{ groups }}: x\n", "does not render valid YAML"),
        ('  q: "{{ username }}"\n', "does not render valid YAML"),
        ("  d: 2024-01-01\n", "renders what JSON cannot hold"),
    ],
)
def test_values_that_cannot_stand_there_name_the_template(
    tmp_path: Path, text: str, message: str
) -> None:
    write(
        tmp_path,
        "50-admin.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: {{ namespace }}\n"
        "data:\n" + text,
    )
    with pytest.raises(TemplateError, match=message) as info:
        render_profile(context(extra={"nan": float("nan")}), [tmp_path])
    assert info.value.template == "50-admin.yaml.j2"
    assert "50-admin.yaml.j2" in str(info.value)


def test_an_edited_template_is_rendered_anew(tmp_path: Path) -> None:
    template = tmp_path / "50-admin.yaml.j2"
    write(tmp_path, template.name, ADMIN_TEMPLATE)
    before = configmap(render_profile(context(), [tmp_path]), "who")
    template.write_text(ADMIN_TEMPLATE.replace("a key", "another key"))
    mtime = os.stat(template).st_mtime_ns + 10**9  # a later mtime, however coarse the clock
    os.utime(template, ns=(mtime, mtime))
    after = configmap(render_profile(context(), [tmp_path]), "who")
    assert before["data"]["alice"] == "a key" and after["data"]["alice"] == "another key"
    assert json.dumps(after["metadata"]) == json.dumps(before["metadata"])

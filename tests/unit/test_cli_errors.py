"""The ``dna-hub`` CLI speaks to the admin who runs it: one line, naming what to fix (#14 item 5).

No cluster is needed: every case fails before one would be contacted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_cli_render import render


def cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dna_hub.cli", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=120,
        check=False,
        **kw,
    )


def test_a_reader_that_goes_away_ends_render_quietly() -> None:
    # `dna-hub render ... | head -1`, made deterministic: the reading end is closed before
    # the first write, so every write meets a broken pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dna_hub.cli", "render", "--user", "alice", "--owner", "a@x"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as a Unix tool killed by it


def test_render_without_owner_names_the_option() -> None:
    result = render("--user", "alice")
    assert result.returncode == 2
    assert "--owner" in result.stderr and "profile_owner_fallback" in result.stderr
    assert "log out" not in result.stderr  # words for a data scientist, not for the admin
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_template_error_names_the_template_file(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "50-x.yaml.j2").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(f"c.DnaSpawner.profile_template_dirs = [{str(templates)!r}]\n")
    result = render("--user", "bob", "--owner", "bob@x", "--config", str(config))
    assert result.returncode == 2
    assert str(templates / "50-x.yaml.j2") in result.stderr
    assert "Please contact your platform administrator" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_syntax_error_in_the_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text("c = get_config()  # noqa\nc.DnaSpawner.kfp_namespace = (\n")
    for command in (["render", "--user", "bob", "--owner", "b@x"], ["doctor"]):
        result = cli(*command, "--config", str(config))
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert str(config) in line and "line 2" in line


def test_a_kubeconfig_that_does_not_exist_is_one_coherent_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = "/nonexistent"
    result = cli("doctor", env=env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "/nonexistent does not exist" in line and "--kubeconfig" in line
    assert result.stdout == ""

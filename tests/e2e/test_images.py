"""The project's Dockerfiles build unchanged (buildah, stand-in bases) and the images run.

Each image is started the way the chart / DnaSpawner run it (non-root, read-only root,
no capabilities, no privilege escalation) and checked from the inside.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack import images

HARDENED = [
    "--rm",
    "--network=none",
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
]


def _run(tag: str, *args: str, user: str, volumes: tuple[str, ...] = ()) -> str:
    result = images.podman(
        "run", *HARDENED, f"--user={user}", *(f"--volume={v}" for v in volumes), tag, *args,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_singleuser_image_runs_non_root_with_kale(singleuser_image: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    script = (
        "import json, os, sys, subprocess\n"
        "out = {'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),\n"
        "       'python': sys.version_info[:2], 'prefix': sys.prefix}\n"
        "try:\n"
        "    open('/etc/dna-hub-probe', 'w')\n"
        "    out['root_writable'] = True\n"
        "except OSError:\n"
        "    out['root_writable'] = False\n"
        "open(os.path.expanduser('~/probe'), 'w').write('ok')\n"
        "out['labext'] = subprocess.run(['jupyter', 'labextension', 'list'],\n"
        "    capture_output=True, text=True).stderr\n"
        "import kfp, dna_hub_kfp_auth\n"
        "out['kfp'] = kfp.__version__\n"
        "print(json.dumps(out))\n"
    )
    seen = json.loads(
        _run(singleuser_image, "python", "-c", script, user="1000:100",
             volumes=(f"{home}:/home/jovyan",)).splitlines()[-1]
    )  # fmt: skip
    assert (seen["uid"], seen["gid"]) == (1000, 100)
    assert seen["root_writable"] is False
    assert seen["python"] == [3, 11]
    assert seen["prefix"] == "/opt/conda"
    assert seen["kfp"].startswith("2.")
    assert "jupyterlab-kubeflow-kale" in seen["labext"] and "enabled" in seen["labext"]
    assert (home / "probe").read_text() == "ok"
    # The image's own user is numeric and non-root (what runAsNonRoot checks).
    user = images.podman("image", "inspect", "--format", "{{.Config.User}}", singleuser_image)
    assert user.stdout.strip() == "1000:100"
    # sudo was purged by the Dockerfile.
    assert (
        _run(
            singleuser_image, "bash", "-c", "command -v sudo || echo none", user="1000:100"
        ).strip()
        == "none"
    )


def test_hub_image_runs_jupyterhub_with_dna_hub(hub_image: str) -> None:
    script = (
        "import json, os, sys, jupyterhub, kubespawner, dna_hub\n"
        "from dna_hub.hub.spawner import DnaSpawner\n"
        "print(json.dumps({'uid': os.getuid(), 'python': sys.version_info[:2],\n"
        "    'jupyterhub': jupyterhub.__version__}))\n"
    )
    seen = json.loads(_run(hub_image, "python3", "-c", script, user="1000:1000").splitlines()[-1])
    assert seen["uid"] == 1000
    assert seen["python"] == [3, 12]
    assert seen["jupyterhub"].startswith("5.")
    user = images.podman("image", "inspect", "--format", "{{.Config.User}}", hub_image)
    assert user.stdout.strip() == "1000:1000"
    # The profile templates ship inside the package.
    listing = _run(
        hub_image, "python3", "-c",
        "import importlib.resources as r; print(sorted(p.name for p in "
        "r.files('dna_hub').iterdir()), sorted(p.name for p in "
        "r.files('dna_hub.hub').iterdir()))",
        user="1000:1000",
    )  # fmt: skip
    # (the spawner moved to dna_hub.hub; the templates are dna_hub/profile-templates)
    package, hub = listing.strip().split("] [")
    assert "'profile-templates'" in package
    assert "'spawner.py'" in hub


def test_a_dockerfile_that_does_not_build_fails(singleuser_image: str, tmp_path: Path) -> None:
    """The real Dockerfile with one failing step: the build raises with the log's tail."""
    real = images.PROJECT_IMAGES["singleuser"].dockerfile.read_text()
    broken = real.replace(
        "USER 0\n", "USER 0\nRUN echo 'dna-hub: this step fails on purpose' && exit 3\n", 1
    )
    assert broken != real
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(broken)
    with pytest.raises(images.ImageBuildError, match="fails on purpose"):
        images.build_project_image(
            "singleuser", dockerfile=dockerfile, tag="localhost/dna-hub-test/broken:never"
        )
    assert images.image_label("localhost/dna-hub-test/broken:never") is None


def test_inputs_change_when_a_context_file_changes(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("1")
    first = images._hash_files(tmp_path, ("Dockerfile", "sub"))
    (tmp_path / "sub" / "a.txt").write_text("2")
    assert images._hash_files(tmp_path, ("Dockerfile", "sub")) != first
    (tmp_path / "sub" / "__pycache__").mkdir()
    (tmp_path / "sub" / "__pycache__" / "a.pyc").write_text("x")
    second = images._hash_files(tmp_path, ("Dockerfile", "sub"))
    assert second == images._hash_files(tmp_path, ("Dockerfile", "sub"))
    # the project images' inputs name files that exist
    for image in images.PROJECT_IMAGES.values():
        for rel in image.inputs:
            assert (image.context / rel).exists(), rel


def test_build_mounts_leave_nothing_in_the_image(singleuser_image: str) -> None:
    """The host CA bundle mounted into RUN steps is not part of the image: Debian's is."""
    debian, _ = images.ensure_debian_base()
    digests = {
        tag: images.podman(
            "run", "--rm", "--network=none", tag, "sha256sum",
            "/etc/ssl/certs/ca-certificates.crt",
        ).stdout.split()[0]
        for tag in (debian, singleuser_image)
    }  # fmt: skip
    assert len(set(digests.values())) == 1, digests
    conf = images.podman("run", "--rm", "--network=none", singleuser_image, "cat", "/etc/pip.conf")
    assert conf.stdout == images.PIP_CONF


def test_hub_image_meets_the_minimum_safe_versions(hub_image: str) -> None:
    """Issue 25.8: the image's JupyterHub is our pin (images/hub/requirements.txt) over the
    chart's 5.5.0, and doctor's version checks (dna_hub/cli/versions_check.py) pass inside."""
    script = (
        "import json, jupyterhub\n"
        "from dna_hub.cli.versions_check import check_versions\n"
        "print(json.dumps({'jupyterhub': jupyterhub.__version__,\n"
        "    'checks': [[c.name, c.ok, c.detail] for c in check_versions()]}))\n"
    )
    seen = json.loads(_run(hub_image, "python3", "-c", script, user="1000:1000").splitlines()[-1])
    assert seen["jupyterhub"] == "5.5.4"
    assert seen["checks"] and all(ok for _, ok, _ in seen["checks"]), seen["checks"]
    assert ["jupyterhub >= 5.5.1 (minimum safe version)", True, "5.5.4 installed"] in seen["checks"]

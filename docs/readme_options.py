"""Writes README.md's table of `batch-infer run` options from the parser itself, so the table
cannot drift from `batch-infer run --help`: each option is defined once, in batch_infer/config.py.

    python docs/readme_options.py           # rewrite the table between the marker comments
    python docs/readme_options.py --check   # exit 1 if README.md differs (tests/test_readme.py)

The default column is the help text's trailing "(default: ...)", the meaning column the rest.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- run-options:start -->"
END = "<!-- run-options:end -->"
NOTE = ("<!-- generated from `batch-infer run --help` by docs/readme_options.py: change the help "
        "text in batch_infer/config.py, then run `make readme` -->")
FIX = "run `make readme` (python docs/readme_options.py) to regenerate it"
# "(default: ...)" at the end of a help text, allowing one level of parentheses inside.
DEFAULT = re.compile(r"\s*\(default: ((?:[^()]|\([^()]*\))*)\)\s*$")


def run_parser() -> argparse.ArgumentParser:
    sys.path.insert(0, str(ROOT))
    from batch_infer.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction))
    return commands.choices["run"]


def invocation(action: argparse.Action) -> str:
    """The flag as --help shows it: `--top-k K`, `--recursive/--no-recursive`."""
    flags = "/".join(action.option_strings)
    if action.nargs == 0:
        return flags
    if action.metavar is not None:
        metavar = action.metavar
    elif action.choices is not None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        metavar = action.dest.upper()  # what argparse prints when no metavar is given
    return f"{flags} {metavar}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(parser: argparse.ArgumentParser) -> str:
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        meaning = (action.help or "").replace("%%", "%")
        match = DEFAULT.search(meaning)
        if match:
            default, meaning = match.group(1), meaning[:match.start()]
        else:
            default = "off" if isinstance(action, argparse._StoreTrueAction) else ""
        lines.append(f"| `{invocation(action)}` | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(lines)


def render(readme: str, parser: argparse.ArgumentParser) -> str:
    """README text with the generated table between the markers, everything else untouched."""
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise SystemExit(f"README.md must hold one {START} line followed by one {END} line "
                         "around the run options table.")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{NOTE}\n{table(parser)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--check", action="store_true",
                     help="change nothing; exit 1 when the table differs from --help")
    cli.add_argument("--readme", type=Path, default=README, help="file to update (default: README.md)")
    args = cli.parse_args(argv)

    current = args.readme.read_text(encoding="utf-8")
    wanted = render(current, run_parser())
    if current == wanted:
        return 0
    if args.check:
        diff = difflib.unified_diff(current.splitlines(), wanted.splitlines(), "README.md",
                                    "from batch-infer run --help", lineterm="", n=0)
        print("\n".join(diff), file=sys.stderr)
        print(f"{args.readme.name}: the run options table differs from `batch-infer run --help`; "
              f"{FIX}.", file=sys.stderr)
        return 1
    args.readme.write_text(wanted, encoding="utf-8")
    print(f"{args.readme.name}: run options table regenerated from `batch-infer run --help`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

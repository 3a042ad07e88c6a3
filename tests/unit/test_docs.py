"""The README says what the code does: settings, commands and file references."""

from __future__ import annotations

import re
from pathlib import Path

from hallstats.cli.main import build_parser
from hallstats.settings import Settings, settings_table

ROOT = Path(__file__).resolve().parents[2]
PATH = re.compile(r"\b((?:[A-Za-z0-9_.-]+/)+[A-Za-z0-9_.-]+\.(?:py|sh|yml|yaml|json|toml|txt))")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def test_settings_table_is_generated_from_the_model() -> None:
    block = README.split("<!-- settings-table", 1)[1].split("-->", 1)[1]
    block = block.split("<!-- /settings-table -->", 1)[0].lstrip("\n")
    assert block == settings_table(), "run `python -m hallstats.settings` and paste its table"


def test_every_setting_appears_once_with_a_description() -> None:
    for name, field in Settings.model_fields.items():
        variable = f"`HALLSTATS_{name.upper()}`"
        assert README.count(f"| {variable} |") == 1, variable
        assert field.description, f"Settings.{name} needs a description for the README"


def test_every_command_is_documented_once() -> None:
    commands = _section("Commands")
    documented = re.findall(r"^\| `hallstats ([a-z-]+)", commands, flags=re.M)
    usage = build_parser().format_usage()  # "usage: hallstats [-h] {stack,emit,...} ..."
    commands_of_cli = re.search(r"\{([a-z,-]+)\}", usage)
    assert commands_of_cli is not None, usage
    assert sorted(documented) == sorted(commands_of_cli.group(1).split(",")), (
        "the Commands table must list each `hallstats` command exactly once"
    )


def test_paths_the_docs_name_exist() -> None:
    texts = {
        "README.md": README,
        "pyproject.toml": (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
        "Makefile": (ROOT / "Makefile").read_text(encoding="utf-8"),
    }
    missing = [
        f"{doc}: {path}"
        for doc, text in texts.items()
        for path in PATH.findall(text)
        if not (ROOT / path).exists() and not path.startswith(("~", "/", ".stack/", ".venv/"))
    ]
    assert not missing, missing


def test_files_the_layout_table_names_exist() -> None:
    """Each Layout row names files and folders by their bare names, under its folder."""
    missing = []
    for row in re.findall(r"^\| (`[^|]+`) \| (.+) \|$", _section("Layout"), flags=re.M):
        folders = re.findall(r"`([^`]+/)`", row[0])
        for name in re.findall(r"`([A-Za-z0-9_.-]+(?:\.py|\.json|\.sh|/))`", row[1]):
            if not any((ROOT / folder / name).exists() for folder in folders):
                missing.append(f"{folders}: {name}")
    assert not missing, missing

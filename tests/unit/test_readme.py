"""The README stays true: it starts with the two commands and documents every setting."""

from __future__ import annotations

from pathlib import Path

from services.common.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:40])
    assert "make run" in head and "make test" in head


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        variable = "ANTHROPIC_API_KEY" if name == "anthropic_api_key" else f"COO_{name.upper()}"
        assert f"`{variable}`" in README, f"{variable} ({field.description}) is missing from README.md"

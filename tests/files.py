"""Where the repository and its example blueprint are, and the blueprint files tests write."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello" / "blueprint.yaml"


def write_blueprint(tmp_path: Path, text: str, name: str = "blueprint.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path

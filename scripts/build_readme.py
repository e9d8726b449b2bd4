"""Assemble README.md from docs/: the head (set-up, architecture, contracts), then one section per area.

Each docs/<area>.md is the source of its README section; edit those and re-run
``python scripts/build_readme.py``. Headings are shifted so every area is a level-2 section.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["results", "foundation", "vocab", "generate", "mine", "train", "evaluate", "embed", "kernels", "serve", "submit",
         "status"]


def section(text: str) -> str:
    lines = text.strip("\n").splitlines()
    first = next((line for line in lines if line.startswith("#")), "## ")
    shift = 1 if first.startswith("# ") else 0
    out = []
    fence = False
    for line in lines:
        if line.startswith("```"):
            fence = not fence
        out.append("#" * shift + line if line.startswith("#") and not fence else line)
    return "\n".join(out)


def main() -> None:
    parts = [(ROOT / "docs" / "_readme_head.md").read_text().strip("\n")]
    for name in ORDER:
        path = ROOT / "docs" / f"{name}.md"
        if path.is_file():
            parts.append(section(path.read_text()))
    (ROOT / "README.md").write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()

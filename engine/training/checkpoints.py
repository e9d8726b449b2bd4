"""Checkpoints inside the stage directory: find the last complete one to resume; publish the final model atomically."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("embedforge.train")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(directory: Path) -> Path | None:
    """The highest-step ``checkpoint-N`` that is complete (``trainer_state.json`` is written last), or None.

    Incomplete checkpoints (a kill while saving) are removed so they cannot be picked up later.
    """
    if not directory.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT.match(p.name))),
                   reverse=True)
    for _, path in found:
        if (path / "trainer_state.json").is_file() and (path / "modules.json").is_file():
            return path
        log.warning("removing incomplete checkpoint %s (killed while saving)", path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def publish_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temp directory next to ``final``, then rename it into place (replacing an old one)."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)

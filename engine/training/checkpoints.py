"""Checkpoints inside the stage directory: find the last complete one to resume; publish the final model atomically;
weight averaging (WiSE-FT) of the tuned and start weights."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def state_copy(model: Any) -> dict[str, Any]:
    """A detached CPU copy of ``model``'s weights."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def interpolate(tuned: dict[str, Any], start: dict[str, Any], start_share: float) -> dict[str, Any]:
    """WiSE-FT (Wortsman et al. 2022): ``(1 - share) · tuned + share · start`` for every floating-point weight
    (integer buffers are kept from the tuned model)."""
    if tuned.keys() != start.keys():
        raise ValueError(f"weight averaging: the tuned and start models differ in weights "
                         f"({sorted(set(tuned) ^ set(start))[:5]})")
    return {k: (1 - start_share) * v + start_share * start[k] if v.is_floating_point() else v
            for k, v in tuned.items()}

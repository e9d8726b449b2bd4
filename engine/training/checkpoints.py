"""Checkpoints inside the stage directory: find the last complete one to resume; publish the final model atomically;
weight averaging (WiSE-FT) of the tuned and start weights.

Discovery is ``transformers.trainer_utils.get_last_checkpoint`` (the Trainer's own ``checkpoint-N`` naming and
ordering), wrapped by :func:`last_checkpoint` with the one check it lacks: it returns the highest-numbered
directory even when a kill while saving left it torn, and resuming from that fails. Our wrapper accepts a
checkpoint only when ``trainer_state.json`` (which the Trainer writes last) and ``modules.json`` (the
sentence-transformers model) are both there, removes a torn one and asks again.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("embedforge.train")

COMPLETE_MARKERS = ("trainer_state.json", "modules.json")
"""Files a checkpoint has only once its save finished (the Trainer writes ``trainer_state.json`` last)."""


def last_checkpoint(directory: Path) -> Path | None:
    """The highest-step ``checkpoint-N`` that is complete (see :data:`COMPLETE_MARKERS`), or None.

    Incomplete checkpoints (a kill while saving) are removed so they cannot be picked up later.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if not directory.is_dir():
        return None
    while (found := get_last_checkpoint(str(directory))) is not None:
        path = Path(found)
        if all((path / name).is_file() for name in COMPLETE_MARKERS):
            return path
        log.warning("removing incomplete checkpoint %s (killed while saving)", path)
        shutil.rmtree(path)  # an error here stops the loop: a torn checkpoint that cannot be removed is reported
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

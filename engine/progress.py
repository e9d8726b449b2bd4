"""Progress: rich bars on a terminal, plain log lines otherwise (CI, files, pipes).

Rates are computed by :func:`per_second` and shown by :func:`rate_text`, here only: a stage that records a rate
in its manifest passes that same figure to :meth:`Tracker.advance` (``rates=``), so the log line and the
manifest print one number. A rate that is zero because every result came from a cache reads ``cached``, never
``0 tokens/s``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("embedforge")
console = Console(stderr=True)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
"""What ``--log-level`` accepts, in any case."""


def setup_logging(level: str = "INFO") -> None:
    """Rich log handler on a TTY, plain timestamped lines elsewhere. ``level``: one of :data:`LOG_LEVELS`, any case
    (anything else ends the command with a one-line error)."""
    level = level.upper()
    if level not in LOG_LEVELS:
        from embedforge.commands import fail

        fail(f"--log-level: '{level.lower()}' is not one of {', '.join(x.lower() for x in LOG_LEVELS)}")
    root = logging.getLogger("embedforge")
    if root.handlers:
        root.setLevel(level)
        return
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def per_second(count: float, seconds: float, digits: int = 2) -> float:
    """The one rate rule of logs and manifests: ``count / seconds`` rounded to ``digits`` decimals."""
    return round(count / max(seconds, 1e-9), digits)


def rate_text(rates: Mapping[str, float], cached: bool = False) -> str:
    """Rates as logs show them: ``{"output_tokens_per_s": 64.23}`` → ``"64.23 output tokens/s"``. Zero rates are
    left out; when ``cached`` (some work was served from a cache) a zero rate reads ``cached`` instead."""
    parts = [f"{v:,} {k.removesuffix('_per_s').replace('_', ' ')}/s" for k, v in rates.items() if v]
    if cached and any(not v for v in rates.values()):
        parts.append("cached")
    return "  ".join(parts)


class Tracker:
    """Counts work for one task and shows it: a rich bar on a TTY, a log line every ``every`` seconds otherwise."""

    def __init__(self, progress: Progress | None, task: int | None, name: str, unit: str, total: int | None,
                 every: float = 10.0) -> None:
        self._progress, self._task, self.name, self.unit, self.total = progress, task, name, unit, total
        self.done = 0
        self.cached = 0
        self.extra: dict[str, float] = {}
        self.measured: dict[str, float] = {}
        self._t0 = self._last = time.perf_counter()
        self._every = every

    def advance(self, n: int = 1, rates: Mapping[str, float] | None = None, cached: int = 0, **extra: float) -> None:
        """Add ``n`` units done. ``extra`` counters (e.g. ``tokens=...``) are summed and shown per second of this
        tracker; ``rates`` are figures the caller measured itself (e.g. LLM tokens per second of LLM time, as its
        manifest records them), shown as given; ``cached`` counts units a cache served (no work, no rate)."""
        self.done += n
        self.cached += cached
        for key, value in extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value
        self.measured.update(rates or {})
        own = {f"{k}_per_s": per_second(v, self.elapsed) for k, v in self.extra.items()}
        shown = rate_text({**own, **self.measured}, cached=self.cached > 0)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=n, rates=shown)
            return
        now = time.perf_counter()
        if now - self._last >= self._every or (self.total is not None and self.done >= self.total):
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            rate = self.done / max(self.elapsed, 1e-9)
            eta = f" ETA {(self.total - self.done) / rate:,.0f} s" if self.total and 0 < self.done < self.total else ""
            log.info("%s: %d%s %s (%.1f %s/s%s) %s", self.name, self.done, of, self.unit, rate, self.unit, eta, shown)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0


@contextmanager
def track(name: str, total: int | None = None, unit: str = "rows") -> Iterator[Tracker]:
    """Context manager yielding a :class:`Tracker` (``with track("embed", total=n, unit="docs") as t: t.advance()``)."""
    if console.is_terminal:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), TextColumn("{task.fields[rates]}"), TimeElapsedColumn(),
                   TimeRemainingColumn()]
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(f"{name} ({unit})", total=total, rates="")
            yield Tracker(progress, task, name, unit, total)
    else:
        yield Tracker(None, None, name, unit, total)


QUIET_ENV: dict[str, str] = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # weight and file download bars
    "TRANSFORMERS_VERBOSITY": "error",  # weight-loading reports and advice
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' map/filter bars inside training
    "TQDM_DISABLE": "1",  # any other tqdm bar (sentence-transformers' encode, model loading)
    "VLLM_LOGGING_LEVEL": "WARNING",
    "ORT_LOGGING_LEVEL": "3",
}
"""Environment that silences third-party bars and chatter; inherited by every stage subprocess."""


def quiet_third_party(verbosity: int = 0) -> None:
    """Third-party progress bars, weight-loading reports and exporter warnings off (``verbosity`` 0), or left as
    the libraries make them (``embedforge -v``). Our own progress and logs are unaffected. Variables the user set
    are kept."""
    import os
    import warnings

    if verbosity > 0:
        os.environ["EMBEDFORGE_VERBOSE"] = str(verbosity)
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
    warnings.filterwarnings("ignore", message=r"Converting a tensor to a Python")  # torch.jit's TracerWarning
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|sentence_transformers)\..*")
    for name in ("torch.onnx", "onnxruntime", "onnxscript", "sentence_transformers", "transformers", "vllm", "ray",
                 "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)

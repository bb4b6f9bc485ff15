"""Progress bars that suit where the output goes: tqdm in a terminal or a notebook, a few plain lines otherwise.

A bar redraws itself with carriage returns; in a log file, CI output or ``| tee`` that leaves a long line of
debris. So when standard error is not a terminal (and not a notebook), ``progress`` prints at most four
plain lines per loop -- at 25 %, 50 %, 75 % and 100 % -- and only for loops that take more than two
seconds::

    for step in progress(range(cfg.n_steps), desc="MLE"):
        ...

      [MLE] 50% (500/1000) 3.1 s  loss=0.412
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator

QUIET_SECONDS = 2.0  # a loop shorter than this prints nothing when the output is not a terminal


def bars_wanted() -> bool:
    """True in a terminal or a notebook (draw tqdm bars); False in logs, pipes and CI (plain lines), and when
    the environment sets EBM_PROGRESS=plain or EBM_PROGRESS=off (the site build: no widgets on a web page)."""
    from common.config import running_in_notebook

    if os.environ.get("EBM_PROGRESS") in ("plain", "off"):
        return False
    return running_in_notebook() or sys.stderr.isatty()


class PlainProgress:
    """The part of tqdm's interface the lessons use, printing a few plain lines instead of a bar."""

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None,
                 disable: bool = False, **_ignored):
        self.iterable = iterable
        self.desc = desc
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.disable = disable
        self.n = 0
        self.postfix = ""
        self.start = time.perf_counter()
        self.next_quarter = 1

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable or not self.total:
            return
        while self.next_quarter <= 4 and self.n * 4 >= self.next_quarter * self.total:
            elapsed = time.perf_counter() - self.start
            if elapsed >= QUIET_SECONDS:
                tail = f"  {self.postfix}" if self.postfix else ""
                print(f"  [{self.desc}] {25 * self.next_quarter}% ({self.n}/{self.total}) {elapsed:.1f} s{tail}",
                      file=sys.stderr, flush=True)
            self.next_quarter += 1

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    @staticmethod
    def write(text: str, **_ignored) -> None:
        print(text)


def progress(iterable: Iterable | None = None, desc: str = "", **kwargs):
    """``tqdm(iterable, desc=...)`` in a terminal or notebook; ``PlainProgress`` in logs and CI."""
    if bars_wanted():
        from tqdm.auto import tqdm

        kwargs.setdefault("leave", False)
        return tqdm(iterable, desc=desc, **kwargs)
    if os.environ.get("EBM_PROGRESS") == "off":
        kwargs["disable"] = True
    return PlainProgress(iterable, desc=desc, **kwargs)

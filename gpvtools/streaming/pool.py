"""Stages that keep several model requests in flight and still write their outputs in input order.

gpv-parse (a chunk's perceptions) and gpv-elicit (a value's questions, a question's answers) share
this: each input's work runs in a worker thread, at most `jobs` at once, and a result is passed on
only when every input before it has been, so output order never depends on the server's speed.
"""

import collections
from concurrent.futures import ThreadPoolExecutor

from .errors import BadRecord
from .stage import Stage


class PooledStage(Stage):
    """A Stage whose `work(entry)` runs in a thread pool; `outputs(entry, result)` turns its result
    into records on the main thread, in input order. Subclasses set `jobs`, and `ahead` where an input
    may take many times as long as the next (a model that decodes `jobs` replies together): that many more
    inputs wait their turn in the pool, so that a slow input at the head leaves no job idle."""

    jobs = 1
    ahead = 0

    def work(self, entry):
        """The slow part for one valid input (a model request); runs in a worker thread."""
        raise NotImplementedError

    def outputs(self, entry, result):
        """The output records for one input, from what `work` returned."""
        raise NotImplementedError

    def _finish(self, entry, future):
        if future is not None:
            try:
                return entry, self.outputs(entry, future.result())
            except BadRecord as e:
                entry.error = BadRecord(f"{e.message} (id '{entry.key}')", entry.line, entry.record)
        return entry, None

    def map(self, entries):
        """Up to `jobs` inputs in flight (and `ahead` more waiting); results come out in input order."""
        window = collections.deque()
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        try:
            for entry in entries:
                future = pool.submit(self.work, entry) if entry.error is None else None
                window.append((entry, future))
                while (len(window) > self.jobs + self.ahead
                       or (window and window[0][1] is not None and window[0][1].done())):
                    yield self._finish(*window.popleft())
            while window:
                yield self._finish(*window.popleft())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

"""Stable partition of documents over N workers: K/N by a hash of the document id."""

import hashlib
import os

from .errors import UsageError


def parse_shard(spec):
    """'K/N' to (K, N) with 0 <= K < N; None stays None."""
    if spec is None:
        return None
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard must be K/N with integers, e.g. 0/4, not '{spec}'") from None
    if n < 1 or not 0 <= k < n:
        raise UsageError(f"--shard {spec}: need N >= 1 and 0 <= K < N")
    return k, n


def shard_from_env(environ=None):
    """K/N from a SLURM array job, or None outside one.

    SLURM numbers tasks from SLURM_ARRAY_TASK_MIN (often 0 or 1) and counts them in
    SLURM_ARRAY_TASK_COUNT; K is the task's offset from the minimum.
    """
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
    except ValueError:
        raise UsageError("SLURM_ARRAY_TASK_ID/_MIN/_COUNT are not integers; pass --shard K/N") from None
    return parse_shard(f"{task - first}/{count}")


def shard_of(doc_id, n):
    """Which of n shards a document id belongs to; the same on every machine and Python run."""
    digest = hashlib.blake2b(str(doc_id).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n

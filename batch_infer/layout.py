"""What OUT holds, by name: the committed parts, their temporaries, and the lock file of each
shard. The readers (`output`), the writers (`sink`, `atomic`), the lock (`lock`) and the run
(`runner`) all take names from here, so a part means the same thing to each of them.

Anything that is not a part starts with `.` (temporaries, the lock), so pyarrow, pandas, DuckDB
and Polars, which skip names starting with `.` or `_`, read OUT as one table at any moment.
"""

from __future__ import annotations

import os

PART_GLOB = "part-*.parquet"
# Parquet key-value metadata of a part that batch-infer writes: model, options, run id...
METADATA_PREFIX = b"batch_infer."


def shard_tag(shard: tuple[int, int]) -> str:
    """`0of4` for --shard 0/4: in the names of the shard's parts, temporaries and lock."""
    return f"{shard[0]}of{shard[1]}"


def part_prefix(shard: str, run_id: str) -> str:
    """What a run's part names share: the run id keeps overlapping runs' parts apart."""
    return f"{shard}-{run_id}"


def part_name(prefix: str, number: int) -> str:
    return f"part-{prefix}-{number:05d}.parquet"


def temporary(path: str) -> str:
    """Where a file is written before it is renamed to `path`: beside it, hidden."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp")


def temporary_parts_glob(shard: str) -> str:
    """The temporaries of a shard's parts, which only a killed run leaves behind."""
    return f".part-{shard}-*.tmp"


def lock_file(output: str, shard: str) -> str:
    return os.path.join(output, f".lock-{shard}")

"""Score a directory of images with a TensorFlow SavedModel and write predictions to Parquet.

Every command is also a call here (see `api`): `score`, `inspect`, `review`, `report`, `export`.
"""

__version__ = "0.1.0"

from .api import RunFailed, export, inspect, load_embeddings, report, review, score, score_dataset  # noqa: E402
from .config import ConfigError  # noqa: E402

__all__ = ["ConfigError", "RunFailed", "export", "inspect", "load_embeddings", "report", "review",
           "score", "score_dataset"]

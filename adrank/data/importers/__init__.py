"""Readers of real public click logs (Criteo, Avazu, iPinYou, Open Bandit) into adrank's log schema.

One call, :func:`import_log`, streams a raw sample (plain or gzip) into a parquet file with the
canonical columns: sparse ids keep their source names and raw values (strings stay strings,
integer ids int64), ``label`` is int8, dense values float32, event time ``ts`` is
timestamp[s, UTC] where the source has one, and every column's role is in the schema metadata.
Each format lives in its own module (``criteo``, ``avazu``, ``ipinyou``, ``obd``);
``pipeline`` drives them.
"""

from adrank.data.importers.pipeline import IMPORT_METADATA_KEY, import_log
from adrank.data.importers.types import ImportSummary, SourceFormat

__all__ = ["IMPORT_METADATA_KEY", "ImportSummary", "SourceFormat", "import_log"]

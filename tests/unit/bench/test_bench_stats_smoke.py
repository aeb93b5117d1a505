"""The stats benchmark runs at its --smoke size (so it does not rot) and reports its fields."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from bench.harness import BenchResult
from bench.stats import DEFAULT_CONFIG, ensure_data, run


def test_stats_benchmark_smoke(tmp_path: Path) -> None:
    config = dict(DEFAULT_CONFIG, data_dir=str(tmp_path))
    result = run(config, smoke=True)
    assert isinstance(result, BenchResult) and result.name == "stats"
    m = result.metrics
    rows, cols = DEFAULT_CONFIG["smoke_rows"], DEFAULT_CONFIG["smoke_columns"]
    assert m["rows"] == rows and m["features"] == cols and m["total_ids"] == rows * cols
    assert m["wall_s"] > 0 and m["ids_per_s"] == m["total_ids"] / m["wall_s"]
    assert m["rows_per_s"] == rows / m["wall_s"]
    for key in (
        "read_s",
        "sketch_thread_s",
        "summarize_s",
        "write_s",
        "peak_rss_bytes",
        "stats_file_bytes",
    ):
        assert m[key] >= 0, key
    assert set(result.targets) == {"wall_s", "peak_rss_bytes"}
    assert (
        result.targets["wall_s"]["max"] == 60 and result.targets["peak_rss_bytes"]["max"] == 4 << 30
    )
    assert "time split" in result.notes.lower()
    # The data file is cached, keyed by its settings, with the Criteo cardinalities as vocabularies.
    path = ensure_data(config, smoke=True)
    assert path.parent == tmp_path and len(list(tmp_path.glob("stats-*.parquet"))) == 1
    table = pq.read_table(path)
    assert table.column_names == ["ts"] + [f"C{i + 1}" for i in range(cols)]
    for i, card in enumerate(DEFAULT_CONFIG["cardinalities"][:cols]):
        ids = table.column(f"C{i + 1}").to_numpy()
        assert len(set(ids.tolist())) <= card

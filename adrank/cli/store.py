"""``adrank store``: inspect and maintain a feature store (``stats``, ``compact``).

``adrank store stats --store PATH [--json]`` prints, per feature group, its entities, versions, size
on disk, event-time range, TTL and whether its scan snapshot is current. ``adrank store compact
--store PATH [--now TIME] [--groups A,B] [--drop-expired]`` deletes versions that no read at or
after ``--now`` can return (see :meth:`feature_service.FeatureStore.compact`), then refreshes the
scan snapshot of every group it changed, so the next join reads files again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

__all__ = ["register", "run", "parse_time_us"]


def parse_time_us(text: str) -> int:
    """Parse ``now``, an ISO-8601 date or time (UTC unless it names a zone) or integer Unix
    microseconds into Unix microseconds. Used as an argparse ``type`` (a bad value exits 2)."""
    t = text.strip()
    if t == "now":
        return time.time_ns() // 1_000
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'now', an ISO-8601 time like 2026-01-05T06:00:00Z or Unix microseconds, "
            f"found {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1_000_000)


def _format_us(us: int | None) -> str:
    if us is None:
        return "-"
    return dt.datetime.fromtimestamp(us / 1e6, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``store`` subcommand (with ``stats`` and ``compact``) and return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "store",
        help="inspect (stats) or compact a feature store",
        description="Inspect or maintain a RocksDB feature store written by `adrank ingest`.",
    )
    sub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    s = sub.add_parser(
        "stats",
        help="per group: entities, versions, disk size, time range, TTL, snapshot state",
        description="Print per-group statistics of a feature store (one scan of every key).",
    )
    s.add_argument("--store", required=True, metavar="PATH", help="feature store directory")
    s.add_argument("--json", action="store_true", help="print one JSON document instead")
    c = sub.add_parser(
        "compact",
        help="delete versions no read at or after --now can return; refresh scan snapshots",
        description=(
            "For each group with a TTL, delete every version older than NOW - ttl that has a "
            "newer version of its entity (reads at or after NOW are unchanged; point-in-time "
            "joins at earlier times may lose versions, so pass the oldest time you still join "
            "at). With --drop-expired, entities whose newest version is expired go too. Then "
            "RocksDB compacts the groups and their scan snapshots are rewritten."
        ),
    )
    c.add_argument("--store", required=True, metavar="PATH", help="feature store directory")
    c.add_argument(
        "--now",
        type=parse_time_us,
        default="now",
        metavar="TIME",
        help="reads at or after this time stay exact: 'now' (default), an ISO-8601 time "
        "(UTC unless zoned) or Unix microseconds",
    )
    c.add_argument(
        "--groups",
        metavar="A,B",
        help="comma-separated groups to compact (default: every group with a TTL)",
    )
    c.add_argument(
        "--drop-expired",
        action="store_true",
        help="also remove entities whose newest version is older than NOW - ttl",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``stats`` or ``compact``; return the exit code."""
    if args.store_command == "stats":
        return _stats(args)
    return _compact(args)


def _stats(args: argparse.Namespace) -> int:
    from feature_service import FeatureStore
    from feature_service.pit_snapshot import store_snapshot_state

    with FeatureStore.open(args.store, read_only=True) as store:
        rows: list[dict[str, Any]] = []
        for st in store.stats():
            g = store.group(st.group)
            rows.append(
                {
                    "group": st.group,
                    "entity_type": g.entity_type,
                    "features": len(g.features),
                    "schema_version": g.schema_version,
                    "ttl_s": g.ttl_s,
                    "entities": st.entities,
                    "versions": st.versions,
                    "disk_bytes": st.disk_bytes,
                    "oldest_event_us": st.oldest_event_us,
                    "newest_event_us": st.newest_event_us,
                    "scan_snapshot": store_snapshot_state(store, st.group),
                }
            )
    if args.json:
        print(json.dumps({"store": str(args.store), "groups": rows}, indent=1))
        return 0
    print(f"feature store {args.store}: {len(rows)} group(s)")
    for r in rows:
        ttl = "none" if r["ttl_s"] is None else f"{r['ttl_s']} s"
        print(
            f"  {r['group']} (entity {r['entity_type']}, {r['features']} features, schema "
            f"v{r['schema_version']}, ttl {ttl}): {r['entities']:,} entities, "
            f"{r['versions']:,} versions, {r['disk_bytes'] / 1e6:.1f} MB, events "
            f"{_format_us(r['oldest_event_us'])} .. {_format_us(r['newest_event_us'])}, "
            f"scan snapshot {r['scan_snapshot']}"
        )
    return 0


def _compact(args: argparse.Namespace) -> int:
    from feature_service import FeatureStore
    from feature_service.pit_snapshot import refresh_store_snapshot

    groups = None
    if args.groups:
        groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    with FeatureStore.open(args.store) as store:
        before = {g.name: store.generation(g.name) for g in store.groups()}
        report = store.compact(args.now, groups=groups, drop_expired=args.drop_expired)
        print(f"compacted {args.store} as of {_format_us(args.now)}")
        for gc in report.groups:
            print(
                f"  {gc.group}: {gc.versions_scanned:,} versions scanned, "
                f"{gc.versions_deleted:,} deleted, {gc.entities_dropped:,} entities dropped"
            )
        for name, generation in before.items():
            if store.generation(name) != generation:
                state = refresh_store_snapshot(store, name)
                print(f"  {name}: scan snapshot {state}")
    return 0

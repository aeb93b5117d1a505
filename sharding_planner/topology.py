"""The devices a plan is made for: uniform (``--devices N --device-memory 16GiB``) or from a file.

A topology file is YAML or JSON, in one of two forms (ranks are numbered in file order)::

    inter_host_bandwidth: 12.5GB/s        # optional, between hosts
    hosts:
      - name: host0
        devices: 4                        # a count, with the per-device settings below
        device_memory: 16GiB
        memory_bandwidth: 900GB/s         # optional
        comm_bandwidth: 600GB/s           # optional, device link inside the host
      - name: host1
        devices:                          # or one entry per device
          - {memory: 16GiB}
          - {memory: 8GiB, memory_bandwidth: 500GB/s}

    devices:                              # flat form
      - {host: a, memory: 16GiB}
      - {host: a, memory: 12GiB}

Sizes take ``B``, ``K/KB/KiB``, ``M/MB/MiB``, ``G/GB/GiB``, ``T/TB/TiB`` (``K``/``KiB`` = 1024,
``KB`` = 1000) or plain byte counts; bandwidths the same with ``/s``. Unknown keys are errors that
name the key path and the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from adrank.errors import InputError, NotFoundError
from adrank.types import DeviceSpec, Topology
from adrank.units import parse_size_bytes, scaled_bytes

__all__ = [
    "parse_bandwidth",
    "parse_size_bytes",
    "read_topology",
    "topology_to_json",
    "uniform_topology",
]

_HOST_KEYS = {"name", "devices", "device_memory", "memory_bandwidth", "comm_bandwidth"}
_DEVICE_KEYS = {"host", "memory", "memory_bandwidth", "comm_bandwidth"}
_TOP_KEYS = {"hosts", "devices", "inter_host_bandwidth"}


def parse_bandwidth(text: str | int | float, *, source: str = "bandwidth") -> float:
    """Parse ``900GB/s``, ``12.5GB/s`` or a number of bytes per second.

    Raises:
        InputError: Not a positive bandwidth.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text <= 0:
            raise InputError(f"expected a bandwidth > 0, found {text!r}", source=source)
        return float(text)
    s = str(text).strip()
    if s.lower().endswith("/s"):
        s = s[:-2]
    value = scaled_bytes(s)
    if value is None:
        raise InputError(
            f"expected a bandwidth like 900GB/s or 12.5GB/s, found {text!r}", source=source
        )
    if value <= 0:
        raise InputError(f"expected a bandwidth > 0, found {text!r}", source=source)
    return value


def uniform_topology(
    num_devices: int, memory_bytes: int, *, devices_per_host: int | None = None
) -> Topology:
    """``num_devices`` identical devices, on one host unless ``devices_per_host`` is given.

    Raises:
        InputError: A count or size is not positive.
    """
    problems = []
    if num_devices < 1:
        problems.append(
            InputError(f"need at least 1 device, found {num_devices}", source="--devices")
        )
    if memory_bytes < 1:
        problems.append(
            InputError(
                f"device memory must be >= 1 byte, found {memory_bytes}", source="--device-memory"
            )
        )
    if devices_per_host is not None and devices_per_host < 1:
        problems.append(
            InputError(
                f"devices per host must be >= 1, found {devices_per_host}",
                source="devices_per_host",
            )
        )
    if problems:
        raise InputError.from_problems(problems)
    per = devices_per_host or num_devices
    return Topology(
        devices=tuple(
            DeviceSpec(rank=r, host=f"host{r // per}", memory_bytes=memory_bytes)
            for r in range(num_devices)
        )
    )


def read_topology(path: str | os.PathLike[str]) -> Topology:
    """Read a topology file (YAML or JSON; see the module docstring).

    Raises:
        NotFoundError: No such file.
        InputError: Unparseable or invalid; every problem names its key path and the file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFoundError("topology file does not exist", source=str(p)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the topology file: {exc}", source=str(p)) from exc
    try:
        doc = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(
            f"cannot parse the topology file: {exc}",
            source=str(p),
            hint="see `adrank plan --help` for the topology format",
        ) from exc
    return topology_from_dict(doc, str(p))


def topology_from_dict(doc: Any, source: str) -> Topology:
    """Build a topology from a parsed topology document (see :func:`read_topology`)."""
    problems: list[InputError] = []

    def err(where: str, msg: str) -> None:
        problems.append(InputError(msg, source=f"{source}:{where}" if where else source))

    if not isinstance(doc, dict):
        raise InputError(
            f"expected a mapping with 'hosts' or 'devices', found {type(doc).__name__}",
            source=source,
        )
    for k in sorted(set(doc) - _TOP_KEYS):
        err(str(k), f"unknown key {k!r}; known: {sorted(_TOP_KEYS)}")
    if ("hosts" in doc) == ("devices" in doc):
        err("", "give exactly one of 'hosts' or 'devices'")
        raise InputError.from_problems(problems)

    def size(v: Any, where: str) -> int:
        try:
            return parse_size_bytes(v, source=f"{source}:{where}")
        except InputError as e:
            problems.append(e)
            return 1

    def bw(v: Any, where: str) -> float | None:
        if v is None:
            return None
        try:
            return parse_bandwidth(v, source=f"{source}:{where}")
        except InputError as e:
            problems.append(e)
            return None

    devices: list[DeviceSpec] = []
    if "hosts" in doc:
        hosts = doc["hosts"]
        if not isinstance(hosts, list) or not hosts:
            err("hosts", "expected a non-empty list of hosts")
            hosts = []
        names: set[str] = set()
        for i, h in enumerate(hosts):
            w = f"hosts[{i}]"
            if not isinstance(h, dict):
                err(w, f"expected a mapping, found {h!r}")
                continue
            for k in sorted(set(h) - _HOST_KEYS):
                err(f"{w}.{k}", f"unknown key {k!r}; known: {sorted(_HOST_KEYS)}")
            name = str(h.get("name", f"host{i}"))
            if name in names:
                err(f"{w}.name", f"duplicate host name {name!r}")
            names.add(name)
            devs = h.get("devices")
            mem_bw = bw(h.get("memory_bandwidth"), f"{w}.memory_bandwidth")
            comm_bw = bw(h.get("comm_bandwidth"), f"{w}.comm_bandwidth")
            if isinstance(devs, int) and not isinstance(devs, bool):
                if devs < 1:
                    err(f"{w}.devices", f"expected a device count >= 1, found {devs}")
                if "device_memory" not in h:
                    err(f"{w}.device_memory", "required when 'devices' is a count")
                    continue
                mem = size(h["device_memory"], f"{w}.device_memory")
                for _ in range(max(devs, 0)):
                    devices.append(DeviceSpec(len(devices), name, mem, mem_bw, comm_bw))
            elif isinstance(devs, list) and devs:
                for j, d in enumerate(devs):
                    dw = f"{w}.devices[{j}]"
                    if not isinstance(d, dict):
                        err(dw, f"expected a mapping, found {d!r}")
                        continue
                    for k in sorted(set(d) - (_DEVICE_KEYS - {"host"})):
                        err(
                            f"{dw}.{k}",
                            f"unknown key {k!r}; known: memory, memory_bandwidth, comm_bandwidth",
                        )
                    mem_v = d.get("memory", h.get("device_memory"))
                    if mem_v is None:
                        err(f"{dw}.memory", "missing (and the host has no device_memory)")
                        continue
                    devices.append(
                        DeviceSpec(
                            len(devices),
                            name,
                            size(mem_v, f"{dw}.memory"),
                            bw(d.get("memory_bandwidth"), f"{dw}.memory_bandwidth") or mem_bw,
                            bw(d.get("comm_bandwidth"), f"{dw}.comm_bandwidth") or comm_bw,
                        )
                    )
            else:
                err(f"{w}.devices", f"expected a device count or a list of devices, found {devs!r}")
    else:
        devs = doc["devices"]
        if not isinstance(devs, list) or not devs:
            err("devices", "expected a non-empty list of devices")
            devs = []
        for j, d in enumerate(devs):
            dw = f"devices[{j}]"
            if not isinstance(d, dict):
                err(dw, f"expected a mapping, found {d!r}")
                continue
            for k in sorted(set(d) - _DEVICE_KEYS):
                err(f"{dw}.{k}", f"unknown key {k!r}; known: {sorted(_DEVICE_KEYS)}")
            if "memory" not in d:
                err(f"{dw}.memory", "missing")
                continue
            devices.append(
                DeviceSpec(
                    len(devices),
                    str(d.get("host", "host0")),
                    size(d["memory"], f"{dw}.memory"),
                    bw(d.get("memory_bandwidth"), f"{dw}.memory_bandwidth"),
                    bw(d.get("comm_bandwidth"), f"{dw}.comm_bandwidth"),
                )
            )
    inter = bw(doc.get("inter_host_bandwidth"), "inter_host_bandwidth")
    if not devices and not problems:
        err("", "the topology has no devices")
    if problems:
        raise InputError.from_problems(problems)
    return Topology(devices=tuple(devices), inter_host_bandwidth_bytes_per_s=inter)


def topology_to_json(topology: Topology) -> dict[str, Any]:
    """The topology as JSON (for fingerprints and reports)."""
    return {
        "devices": [
            {
                "rank": d.rank,
                "host": d.host,
                "memory_bytes": d.memory_bytes,
                "memory_bandwidth_bytes_per_s": d.memory_bandwidth_bytes_per_s,
                "comm_bandwidth_bytes_per_s": d.comm_bandwidth_bytes_per_s,
            }
            for d in topology.devices
        ],
        "inter_host_bandwidth_bytes_per_s": topology.inter_host_bandwidth_bytes_per_s,
    }

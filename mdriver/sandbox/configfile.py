"""Derive a config file with other ports from an existing one (tests, side-by-side sandboxes).

Only ``port`` of the named datasources and the proxy ``listen``/``metrics``
addresses change; everything else is copied as loaded, so the derived file
routes exactly like the original.
"""
from __future__ import annotations

from typing import Any, Mapping

import yaml


def with_ports(
    document: Mapping[str, Any],
    ports: Mapping[str, int],
    proxy_listen: str | None = None,
    metrics: str | None = None,
) -> dict[str, Any]:
    """A copy of a raw config document with datasource ports (and proxy addresses) replaced."""
    doc = yaml.safe_load(yaml.safe_dump(dict(document)))  # deep copy of plain data
    datasources = doc.get("datasources") or {}
    unknown = sorted(set(ports) - set(datasources))
    if unknown:
        raise KeyError(f"no datasource named {', '.join(unknown)} in the config")
    for name, port in ports.items():
        datasources[name]["port"] = int(port)
    if proxy_listen is not None or metrics is not None:
        proxy = doc.setdefault("proxy", {}) or {}
        doc["proxy"] = proxy
        if proxy_listen is not None:
            proxy["listen"] = proxy_listen
        if metrics is not None:
            proxy["metrics"] = metrics
    return doc


def write_config_with_ports(
    source_path: str,
    target_path: str,
    ports: Mapping[str, int],
    proxy_listen: str | None = None,
    metrics: str | None = None,
) -> str:
    """Read ``source_path``, replace ports, write ``target_path``; returns ``target_path``."""
    with open(source_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    derived = with_ports(doc, ports, proxy_listen, metrics)
    with open(target_path, "w", encoding="utf-8") as f:
        f.write(f"# derived from {source_path} with other ports\n")
        yaml.safe_dump(derived, f, sort_keys=False)
    return target_path

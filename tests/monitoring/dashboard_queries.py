#!/usr/bin/env python3
"""Checks the Grafana dashboard's shape and prints its queries.

Grafana is not in Debian, so the dashboard is checked for what Grafana needs to
import it and for what our metrics promise: every panel has an id, a title, a
type, a place on the 24-column grid that overlaps no other panel, the
dashboard's Prometheus datasource variable, and queries; every metric a query
names is one tunnel/status.hpp documents. Prints each query on one line, so the
live test can ask a real Prometheus every one of them.

usage: dashboard_queries.py DASHBOARD_JSON STATUS_HPP
Exit status 0 when the shape is right, 1 with one line per problem otherwise.
"""
import json
import re
import sys

PANEL_TYPES = {"timeseries", "stat", "bargauge", "piechart", "gauge", "table"}
GRID_COLUMNS = 24
# Metrics Prometheus adds itself; every other name must be xmig's.
PROMETHEUS_OWN = {"up"}


def documented_metrics(status_hpp):
    with open(status_hpp) as f:
        return set(re.findall(r"\b(xmig_[a-z_]+)", f.read()))


def query_metrics(expr):
    # A name followed by { or [ or ) or whitespace, minus PromQL's functions and keywords.
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?=\{|\[)", expr))
    return {n for n in names if n.startswith("xmig_") or n in PROMETHEUS_OWN}


def problems_of(dash, metrics):
    problems = []
    for key in ("title", "uid", "schemaVersion", "panels", "templating"):
        if key not in dash:
            problems.append(f"dashboard: no '{key}'")
    if problems:
        return problems
    variables = {v.get("name"): v for v in dash["templating"].get("list", [])}
    source = variables.get("datasource")
    if not source or source.get("type") != "datasource" or source.get("query") != "prometheus":
        problems.append("templating: no variable 'datasource' of type datasource for prometheus")
    ids, cells = set(), {}
    for panel in dash["panels"]:
        where = f"panel {panel.get('id')} '{panel.get('title', '')}'"
        if not isinstance(panel.get("id"), int) or panel["id"] in ids:
            problems.append(f"{where}: id missing or not unique")
        ids.add(panel.get("id"))
        if not panel.get("title"):
            problems.append(f"{where}: no title")
        if panel.get("type") not in PANEL_TYPES:
            problems.append(f"{where}: type {panel.get('type')!r} is not one of {sorted(PANEL_TYPES)}")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not the dashboard's ${{datasource}}")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "xywh") or grid["x"] + grid["w"] > GRID_COLUMNS:
            problems.append(f"{where}: gridPos {grid} is not on the {GRID_COLUMNS}-column grid")
        else:
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        problems.append(f"{where}: overlaps panel {cells[(x, y)]} at column {x}, row {y}")
                        break
                    cells[(x, y)] = panel.get("id")
                else:
                    continue
                break
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            problems.append(f"{where}: refIds missing or repeated: {refs}")
        for t in targets:
            expr = t.get("expr", "")
            if not expr.strip():
                problems.append(f"{where}: query {t.get('refId')} is empty")
            for name in sorted(query_metrics(expr) - metrics - PROMETHEUS_OWN):
                problems.append(f"{where}: {name} is not a metric of tunnel/status.hpp")
    return problems


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        dash = json.load(f)
    problems = problems_of(dash, documented_metrics(sys.argv[2]))
    for p in problems:
        print(f"{sys.argv[1]}: {p}", file=sys.stderr)
    if problems:
        return 1
    for panel in dash["panels"]:
        for t in panel["targets"]:
            print(" ".join(t["expr"].split()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

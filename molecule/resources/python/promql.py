"""The metric names the alert rules and the dashboard of roles/monitoring query.

One home for the monitoring and pipeline scenarios' tests (the shared Molecule config puts this
directory on the verifier's PYTHONPATH): each checks that every name queried exists where it runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FILES = Path(__file__).resolve().parents[3] / "roles" / "monitoring" / "files"
RULES = FILES / "vps_brain_alerts.yml"
DASHBOARD = FILES / "vps_brain_dashboard.json"

# PromQL keywords and modifiers that look like metric names to the pattern below.
WORDS = {
    *("and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"),
    *("bool", "offset", "inf", "nan", "le"),
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (strings, label matchers, ranges, groupings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {n for n in names - WORDS if not re.fullmatch(r"\d+[smhdwy]?", n)}


def rules() -> list[dict[str, Any]]:
    """Every alert rule of the rule file, across its groups."""
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels."""
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def named_metrics() -> dict[str, set[str]]:
    """Every metric name to where it is used (alert names, dashboard panel titles)."""
    uses: dict[str, set[str]] = {}
    for rule in rules():
        for name in metric_names(rule["expr"]):
            uses.setdefault(name, set()).add(rule["alert"])
    for panel in panels():
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                uses.setdefault(name, set()).add(f"dashboard: {panel['title']}")
    return uses

"""The metric names a PromQL expression (or a Grafana query with $variables) reads: enough of
PromQL's lexical rules to tell metric names from functions, keywords, label names, strings,
durations and numbers."""

from __future__ import annotations

import re

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan", "sum", "min", "max", "avg", "group", "stddev",
    "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names in `expr` (label_values(metric, label) counts its metric)."""
    text = _STRING.sub(" ", expr)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\blabel_values\s*\(\s*([A-Za-z_:][\w:]*)\s*,[^)]*\)", r"\1", text)
    text = re.sub(r"\blabel_values\s*\([^)]*\)", " ", text)
    names = set()
    for name, call in _IDENTIFIER.findall(text):
        if call or name.lower() in KEYWORDS or re.fullmatch(r"\d+(\.\d+)?(e\d+)?", name):
            continue
        names.add(name)
    return names

"""Index templates: the built-in ones Elasticsearch installs, and pattern overlap."""

from __future__ import annotations

from typing import Any


def glob_overlap(p: str, q: str) -> bool:
    """Whether two ``*``-glob patterns can match a common string."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(p) and j == len(q):
            r = True
        elif i < len(p) and p[i] == "*":
            r = go(i + 1, j) or (j < len(q) and go(i, j + 1))
        elif j < len(q) and q[j] == "*":
            r = go(i, j + 1) or (i < len(p) and go(i + 1, j))
        elif i < len(p) and j < len(q):
            r = p[i] == q[j] and go(i + 1, j + 1)
        else:
            r = False
        memo[key] = r
        return r

    return go(0, 0)


def builtin_templates() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    strings_as_keyword = {
        "match_mapping_type": "string",
        "mapping": {"type": "keyword", "ignore_above": 1024},
    }
    components: dict[str, dict[str, Any]] = {}
    templates: dict[str, dict[str, Any]] = {}
    for kind in ("logs", "metrics", "synthetics"):
        components[f"{kind}@mappings"] = {
            "template": {
                "mappings": {
                    "date_detection": False,
                    "dynamic_templates": [{"ecs_strings_as_keyword": strings_as_keyword}],
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "data_stream": {"properties": {
                            "type": {"type": "constant_keyword", "value": kind},
                            "dataset": {"type": "constant_keyword"},
                            "namespace": {"type": "constant_keyword"},
                        }},
                    },
                }
            },
            "version": 14,
            "_meta": {"description": f"default mappings for the {kind} index template installed "
                      "by x-pack", "managed": True},
        }
        settings: dict[str, Any] = {"index": {"lifecycle": {"name": kind}}}
        if kind == "logs":
            settings["index"]["mapping"] = {"ignore_malformed": True}
        components[f"{kind}@settings"] = {
            "template": {"settings": settings},
            "version": 14,
            "_meta": {"description": f"default settings for the {kind} index template installed "
                      "by x-pack", "managed": True},
        }
        templates[kind] = {
            "index_patterns": [f"{kind}-*-*"],
            "composed_of": [f"{kind}@mappings", f"{kind}@settings", f"{kind}@custom"],
            "priority": 100,
            "version": 14,
            "_meta": {"description": f"default {kind} template installed by x-pack",
                      "managed": True},
            "data_stream": {"hidden": False, "allow_custom_routing": False},
            "allow_auto_create": True,
            "ignore_missing_component_templates": [f"{kind}@custom"],
        }
    return templates, components

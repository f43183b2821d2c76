"""YAML that refuses a key given twice in one mapping.

PyYAML keeps the last of two equal keys without a word: a second ``serving:`` block further down a
region silently replaced the first, and the operator's settings were not the ones served. A YAML
merge (``<<: *defaults``) still lets a mapping override what it merges: those are not duplicates.
"""

from __future__ import annotations

from typing import Any

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping names one key twice; ``key``, and the lines (1-based) of both."""

    def __init__(self, key: Any, first_line: int, line: int) -> None:
        super().__init__(problem=f"the key {key!r} appears twice in one mapping (lines {first_line} and {line})")
        self.key = key
        self.first_line = first_line
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: PyYAML's own error says so
                continue
            if first != key_node.start_mark.line + 1:
                raise DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load``, but a key given twice in one mapping raises DuplicateKey."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass

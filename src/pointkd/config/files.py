"""Reading YAML within bounds, and parsing `section.key=value` overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pointkd.errors import ConfigError

# A config is a few hundred values, a handful of levels deep. The bounds stop, in a fraction
# of a second and before any value is built, YAML that would expand to millions of values
# through aliases of aliases ("billion laughs"), nest deep enough for a RecursionError, or
# simply be some other, huge file.
MAX_YAML_VALUES = 100_000  # scalars + collections, every alias counted as what it expands to


MAX_YAML_DEPTH = 64


MAX_CONFIG_BYTES = 1 << 20


class YAMLLimitError(yaml.YAMLError):
    """YAML beyond the bounds above (a one-line message)."""


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that counts while composing: nesting depth, and each node's expanded
    size (an alias counts as the whole value it names, so sharing cannot hide a blow-up).
    An alias to a value that contains it (a cycle) is refused too."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, once composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:  # its anchor is still being composed
                raise YAMLLimitError(f"line {line}: an alias inside the value it names (a "
                                     "cycle)")
            return node
        if self._depth >= MAX_YAML_DEPTH:
            raise YAMLLimitError(f"line {line}: nested deeper than {MAX_YAML_DEPTH} levels")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1 + sum(self._sizes[id(child)] for child in _children(node))
        if size > MAX_YAML_VALUES:
            raise YAMLLimitError(f"line {line}: expands to more than {MAX_YAML_VALUES:,} "
                                 "values (aliases of aliases?)")
        self._sizes[id(node)] = size
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` within the bounds above; YAMLError (YAMLLimitError) otherwise."""
    return yaml.load(text, Loader=BoundedLoader)  # BoundedLoader is a SafeLoader


def load_yaml_file(path: str | Path) -> Any:
    """A YAML file's value (None when empty); any problem is a one-line ConfigError naming
    the file: missing, unreadable, too large, not UTF-8, not YAML, beyond the bounds."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {p} is {size:,} bytes; a config is at most "
                              f"{MAX_CONFIG_BYTES:,} (is it the right file?)")
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start:,} is "
                          f"0x{raw[exc.start]:02x}); is it the right file?") from None
    try:
        return load_yaml(text)
    except YAMLLimitError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML: {first}") from None


_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=5` -> (["train", "epochs"], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = load_yaml(raw) if raw != "" else ""
    except YAMLLimitError as exc:
        raise ConfigError(f"override '{key.strip()}': {exc}") from None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-4 and 1.0e30 as strings
    return key.strip().split("."), value

"""Topic templates: map an MQTT topic to a sensor key, and a sensor back to a topic.

A template is a topic whose levels may be ``{name}`` (one level, captured),
``+`` (one level, ignored) or a final ``#`` (the rest, ignored). Its
subscription filter replaces every ``{name}`` with ``+``.

>>> t = TopicTemplate("plant/{line}/{sensor}/accel")
>>> t.filter
'plant/+/+/accel'
>>> t.match("plant/l1/pump-3/accel")
{'line': 'l1', 'sensor': 'pump-3'}
>>> t.sensor_key("plant/l1/pump-3/accel"), t.sensor_key("plant/l1/pump-3/temp")
('pump-3', None)
>>> TopicTemplate("plant/{line}/{sensor}/accel", key="{line}.{sensor}").sensor_key("plant/l1/p/accel")
'l1.p'
>>> t.render(line="l2", sensor="pump-9")
'plant/l2/pump-9/accel'
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from paho.mqtt.client import topic_matches_sub

__all__ = ["TopicTemplate", "check_filter", "check_topic"]

_FIELD = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_CACHE_LIMIT = 65_536


def check_filter(text: str) -> str:
    """Return *text* if it is a valid MQTT subscription filter, else raise ``ValueError``.

    >>> check_filter("plant/+/#")
    'plant/+/#'
    >>> check_filter("plant/#/x")
    Traceback (most recent call last):
    ...
    ValueError: filter 'plant/#/x': '#' must be the last level
    """
    if not text or len(text.encode()) > 65_535:
        msg = f"filter {text!r}: must be 1 to 65535 bytes"
        raise ValueError(msg)
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            where = "the last level" if level == "#" else "a whole level"
            msg = f"filter {text!r}: '#' must be {where}"
            raise ValueError(msg)
        if "+" in level and level != "+":
            msg = f"filter {text!r}: '+' must be a whole level"
            raise ValueError(msg)
    return text


def check_topic(text: str) -> str:
    """Return *text* if it is a valid topic name to publish on (no wildcards), else raise ``ValueError``.

    >>> check_topic("plant/eos")
    'plant/eos'
    """
    if not text or "+" in text or "#" in text or "\x00" in text:
        msg = f"topic {text!r}: a topic name is non-empty and has no '+', '#' or NUL"
        raise ValueError(msg)
    return text


class TopicTemplate:
    """A topic pattern with named levels, a subscription filter and a sensor-key rule.

    *key* is a :meth:`str.format` string over the named levels; by default it
    is ``"{sensor}"`` when the template has a ``{sensor}`` level, else the
    whole topic.
    """

    __slots__ = ("_cache", "_keys", "_levels", "_named", "fields", "filter", "key", "multi", "template")

    def __init__(self, template: str, key: str | None = None) -> None:
        self.template = template
        levels = template.split("/")
        parsed: list[tuple[str, str]] = []  # (kind, text): kind in "lit", "field", "any"
        names: list[str] = []
        multi = False
        for i, level in enumerate(levels):
            found = _FIELD.match(level)
            if found:
                if found.group(1) in names:
                    msg = f"template {template!r}: level {{{found.group(1)}}} appears twice"
                    raise ValueError(msg)
                names.append(found.group(1))
                parsed.append(("field", found.group(1)))
            elif level == "+":
                parsed.append(("any", ""))
            elif level == "#":
                if i != len(levels) - 1:
                    msg = f"template {template!r}: '#' must be the last level"
                    raise ValueError(msg)
                multi = True
            elif any(ch in level for ch in "{}+#"):
                msg = f"template {template!r}: level {level!r} must be literal, '{{name}}', '+' or a final '#'"
                raise ValueError(msg)
            else:
                parsed.append(("lit", level))
        self._levels = tuple(parsed)
        self.multi = multi
        self.fields = tuple(names)
        self.filter = "/".join("+" if kind == "field" else (text if kind == "lit" else "+") for kind, text in parsed)
        if multi:
            self.filter = f"{self.filter}/#" if parsed else "#"
        if key is None:
            key = "{sensor}" if "sensor" in names else "{topic}"
        used = {name for _, name, _, _ in string.Formatter().parse(key) if name is not None}
        unknown = used - set(names) - {"topic"}
        if unknown or not used:
            msg = f"key {key!r}: may only use the template's levels {list(names)} or {{topic}}, and at least one"
            raise ValueError(msg)
        self.key = key
        self._named = tuple((i, text) for i, (kind, text) in enumerate(parsed) if kind == "field")
        self._cache: dict[str, dict[str, str] | None] = {}
        self._keys: dict[str, str | None] = {}

    def match(self, topic: str) -> dict[str, str] | None:
        """Return the named levels of *topic*, or ``None`` when it does not fit the template (cached).

        Whether it fits is paho's ``topic_matches_sub`` against :attr:`filter`; a named level must
        also be non-empty.
        """
        try:
            fields = self._cache[topic]
        except KeyError:
            fields = self._match(topic)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[topic] = fields
        return None if fields is None else dict(fields)

    def _match(self, topic: str) -> dict[str, str] | None:
        if not topic_matches_sub(self.filter, topic):
            return None
        levels = topic.split("/")
        fields = {name: levels[i] for i, name in self._named}
        return None if not all(fields.values()) else fields

    def sensor_key(self, topic: str) -> str | None:
        """Return the sensor key of *topic* (cached), or ``None`` when it does not fit."""
        try:
            return self._keys[topic]
        except KeyError:
            pass
        fields = self.match(topic)
        key = None if fields is None else self.key.format(topic=topic, **fields)
        if len(self._keys) < _CACHE_LIMIT:
            self._keys[topic] = key
        return key

    def render(self, fields: Mapping[str, str] | None = None, **more: str) -> str:
        """Render the topic for the given level values (``+``/``#`` levels cannot be rendered)."""
        values = {**(fields or {}), **more}
        parts = []
        for kind, text in self._levels:
            if kind == "any":
                msg = f"template {self.template!r}: cannot render a '+' level; name it, e.g. {{line}}"
                raise ValueError(msg)
            if kind == "lit":
                parts.append(text)
            elif text not in values:
                msg = f"template {self.template!r}: no value for {{{text}}} (got {sorted(values)})"
                raise ValueError(msg)
            else:
                parts.append(str(values[text]))
        if self.multi:
            msg = f"template {self.template!r}: cannot render a '#' level"
            raise ValueError(msg)
        return "/".join(parts)

    def __repr__(self) -> str:
        return f"TopicTemplate({self.template!r}, key={self.key!r})"

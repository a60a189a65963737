"""Topic filter syntax (MQTT 3.1.1 section 4.7.1), one definition for the
codec, the broker's index and the ACL rules."""

from __future__ import annotations

__all__ = ["filter_error", "is_valid_filter", "is_wildcard"]


def is_wildcard(topic: str) -> bool:
    """True for a filter with '+' or '#' (a topic name must have neither)."""
    return "+" in topic or "#" in topic


def filter_error(topic_filter: str) -> str | None:
    """The statement a non-empty filter breaks, or None when it is valid:
    '#' only as the whole last level (MQTT-4.7.1-2), '+' only as a whole
    level (MQTT-4.7.1-3)."""
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            return "MQTT-4.7.1-2"
        if "+" in level and level != "+":
            return "MQTT-4.7.1-3"
    return None


# A string field holds at most this many bytes (section 1.5.3).
_MAX_BYTES = 65_535


def is_valid_filter(topic_filter: str) -> bool:
    """A filter a SUBSCRIBE may carry: 1 to 65,535 bytes of UTF-8 without
    U+0000 (MQTT-4.7.3-1, 1.5.3-2), its wildcards where they may stand."""
    if not topic_filter or "\0" in topic_filter:
        return False
    if len(topic_filter.encode("utf-8", "surrogatepass")) > _MAX_BYTES:
        return False
    return filter_error(topic_filter) is None

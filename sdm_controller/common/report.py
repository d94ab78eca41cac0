"""A node's diagnostic status as a plain value, turned into ``diagnostic_msgs`` by ``ros.conversions``."""

from __future__ import annotations

from dataclasses import dataclass, field

OK, WARN, ERROR = 0, 1, 2  # diagnostic levels (same values as diagnostic_msgs/DiagnosticStatus)


@dataclass
class Report:
    """Diagnostic status: level (OK/WARN/ERROR), one-line message, key/value pairs."""

    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)

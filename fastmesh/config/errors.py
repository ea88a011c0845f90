"""The one exception config loading raises: a YAML path plus the reason.

Every rejected config stops fastmesh at start with ``<yaml path>: <reason>``, e.g.
``routers[0].servers[1].port: port must be 0..65535, got 70000``. Paths use ``.key`` for
mapping keys and ``[i]`` for list items, rooted at the top of the config document.
"""

from __future__ import annotations

__all__ = ["ConfigError", "join_path"]


class ConfigError(ValueError):
    """A config that linkerd (and so fastmesh) refuses to start with.

    ``path`` names the offending key (empty when the whole document is unreadable),
    ``reason`` says what is wrong with it. ``str(err)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


def join_path(parent: str, key: str | int) -> str:
    """The YAML path of ``key`` (a mapping key, or a list index) inside ``parent``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key

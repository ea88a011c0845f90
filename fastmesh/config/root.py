"""The whole config document (§2): :class:`Config` and :func:`load_config`.

Loading is: read the text, parse YAML/JSON strictly (duplicate keys rejected), convert
every section to typed frozen dataclasses, then the checks that span sections, as
linkerd's ``Linker`` does: at least one router, unique router labels, and no two servers
on the same ip:port.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .admin import AdminConfig
from .errors import ConfigError
from .namers import NAMER_KINDS, NamerConfig
from .routers import ROUTER_PROTOCOLS, RouterConfig
from .servers import bind_key
from .schema import ConfigNode, ParseContext, key, list_of, node_of, parse_node
from .source import check_duplicates, parse_text, read_source
from .telemetry import TELEMETER_KINDS, TelemeterConfig, UsageConfig

__all__ = ["Config", "load_config"]

NO_ROUTERS = "At least one router must be specified in the configuration."


def _routers(value: Any, path: str, ctx: ParseContext) -> tuple[RouterConfig, ...]:
    routers = list_of(ROUTER_PROTOCOLS)(value, path, ctx)
    if not routers:
        raise ConfigError(path, NO_ROUTERS)
    return routers


@dataclass(frozen=True, kw_only=True)
class Config(ConfigNode):
    """A validated linkerd 1.x config."""

    admin: AdminConfig = key("admin", node_of(AdminConfig), default_factory=AdminConfig)
    # Required, but checked in check() so that a misspelt top-level key is reported first.
    routers: tuple[RouterConfig, ...] = key("routers", _routers, ())
    namers: tuple[NamerConfig, ...] = key("namers", list_of(NAMER_KINDS), ())
    telemetry: tuple[TelemeterConfig, ...] = key("telemetry", list_of(TELEMETER_KINDS), ())
    usage: UsageConfig | None = key("usage", node_of(UsageConfig), None)
    # Where the config came from, and what the operator should hear about it.
    source: str = field(default="<text>", compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def router(self, label: str) -> RouterConfig:
        """The router labelled ``label`` (KeyError if there is none)."""
        for router in self.routers:
            if router.label == label:
                return router
        raise KeyError(label)

    def check(self, path: str, ctx: ParseContext) -> None:
        if not self.routers:
            raise ConfigError("routers", f"missing required key 'routers' ({NO_ROUTERS})")
        labels: dict[str, int] = {}
        for index, router in enumerate(self.routers):
            if router.label in labels:
                raise ConfigError(f"routers[{index}].label",
                                  f"conflicting label '{router.label}' "
                                  f"(also routers[{labels[router.label]}].label)")
            labels[router.label] = index
        # Port 0 asks the kernel for a fresh port each time, so it never conflicts (linkerd
        # would compare the literal 0; tests and the demo rely on several port-0 servers).
        bound: dict[tuple[str, int], str] = {}
        if self.admin.port:
            bound[bind_key(self.admin.ip, self.admin.port)] = "admin"
        if self.admin.http_identifier_port:
            where = "admin.httpIdentifierPort"
            addr = bind_key(self.admin.ip, self.admin.http_identifier_port)
            if addr in bound:
                raise ConfigError(where, f"conflicting port {self.admin.ip}:"
                                         f"{self.admin.http_identifier_port} (also used by admin)")
            bound[addr] = where
        for r_index, router in enumerate(self.routers):
            for s_index, server in enumerate(router.servers):
                where = f"routers[{r_index}].servers[{s_index}]"
                if server.port == 0:
                    continue
                other = bound.get(server.bind_key)
                if other is not None:
                    raise ConfigError(where, f"conflicting port {server.address_text} "
                                             f"(also used by {other})")
                bound[server.bind_key] = where


def load_config(source: str | os.PathLike[str], *, text: str | None = None) -> Config:
    """Load and validate a linkerd 1.x config; raise :class:`ConfigError` if it is invalid.

    ``source`` is a file path, or ``-`` for stdin; with ``text`` given, ``source`` only
    names it. The text is YAML, or JSON when its first non-space character is ``{``.
    Environment variables in values are not expanded (linkerd does not either).
    """
    name, body = read_source(source, text)
    data = parse_text(body, name)
    check_duplicates(data)
    if data is None:
        raise ConfigError("routers", f"missing required key 'routers' ({NO_ROUTERS})")
    if not isinstance(data, dict):
        raise ConfigError("", f"the config must be a mapping of sections, got "
                              f"{type(data).__name__}")
    ctx = ParseContext()
    config = parse_node(Config, data, "", ctx)
    return Config(admin=config.admin, routers=config.routers, namers=config.namers,
                  telemetry=config.telemetry, usage=config.usage,
                  explicit_keys=config.explicit_keys, source=name,
                  warnings=tuple(ctx.warnings))

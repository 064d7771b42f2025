"""Typed failures of the local host; the app's own errors live in the app, not here."""

from __future__ import annotations


class DevhostError(Exception):
    """Root of every error the devhost raises on purpose."""


class ConfigError(DevhostError):
    """A setting or a local file is missing or invalid; the message names which."""


class ServiceError(DevhostError):
    """A local service (PostgreSQL, Azurite) could not be started, reached or stopped."""


class AppLoadError(DevhostError):
    """The function app could not be imported or indexed."""


class MigrationError(DevhostError):
    """A migration file failed; the message names it and the database's error."""

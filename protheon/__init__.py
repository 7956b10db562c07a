"""Protheon: distributed loading of Destiny 2 PGCR dumps into PostgreSQL."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("protheon")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

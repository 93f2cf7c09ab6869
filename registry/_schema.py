"""The registry's tables (SQLAlchemy Core, portable to SQLite and PostgreSQL).

``registry_models``
    one row per model name; ``last_version`` is the version counter. A new
    version increments it in the same transaction that inserts the version,
    so the database serialises concurrent registrations and a rolled-back
    registration leaves no gap.
``registry_versions``
    one row per published version: the file's sha256 and size, the graph's
    metadata and the lineage (JSON text), description, status, creation time
    and author. The file, hash, metadata and lineage are never updated.
``registry_tags``
    key/value tags of a version (editable).
``registry_aliases``
    the current holder of each alias of a model.
``registry_alias_history``
    every alias move, appended and never updated.
``registry_blobs``
    one row per stored file; registration and deletion lock it, so a file
    is never removed while another registration is placing the same bytes.
``registry_info``
    key/value facts about the registry itself (its schema version).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "SCHEMA_VERSION",
    "alias_history",
    "aliases",
    "blobs",
    "info",
    "metadata",
    "models",
    "tags",
    "versions",
]

SCHEMA_VERSION = "1"
NAME = 64
STAMP = 40
WHO = 255

metadata = MetaData()

info = Table(
    "registry_info",
    metadata,
    Column("key", String(NAME), primary_key=True),
    Column("value", Text, nullable=False),
)

models = Table(
    "registry_models",
    metadata,
    Column("name", String(NAME), primary_key=True),
    Column("last_version", Integer, nullable=False),
    Column("created_at", String(STAMP), nullable=False),
    Column("updated_at", String(STAMP), nullable=False),
)

versions = Table(
    "registry_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("file", String(255), nullable=False),
    Column("model_metadata", Text, nullable=False),
    Column("lineage", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", String(STAMP), nullable=False),
    Column("created_by", String(WHO), nullable=False),
    UniqueConstraint("name", "version", name="uq_registry_versions_name_version"),
    ForeignKeyConstraint(["name"], ["registry_models.name"], name="fk_registry_versions_model"),
    Index("ix_registry_versions_sha256", "sha256"),
)

tags = Table(
    "registry_tags",
    metadata,
    Column("version_id", Integer, primary_key=True),
    Column("key", String(NAME), primary_key=True),
    Column("value", Text, nullable=False),
    ForeignKeyConstraint(["version_id"], ["registry_versions.id"], name="fk_registry_tags_version"),
)

aliases = Table(
    "registry_aliases",
    metadata,
    Column("name", String(NAME), primary_key=True),
    Column("alias", String(NAME), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", String(STAMP), nullable=False),
    ForeignKeyConstraint(["name"], ["registry_models.name"], name="fk_registry_aliases_model"),
)

alias_history = Table(
    "registry_alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME), nullable=False),
    Column("alias", String(NAME), nullable=False),
    Column("action", String(16), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("at", String(STAMP), nullable=False),
    Column("who", String(WHO), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_registry_alias_history_name_alias", "name", "alias"),
)

blobs = Table(
    "registry_blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("touched_at", String(STAMP), nullable=False),
)

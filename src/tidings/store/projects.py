"""Projects and their API keys (stored only as hashes)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tidings.domain.auth import ApiKey, Role, Scope, generate_key, hash_key
from tidings.domain.errors import NotFound
from tidings.store.database import Writer
from tidings.store.tables import api_keys, projects

__all__ = ["CreatedKey", "Project", "ProjectStore"]


def _now() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    name: str
    locale: str | None
    timezone: str | None
    # Web origins its public key may be used from; None: any (domain/origins.py).
    allowed_origins: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: int
    key: str  # the only time the plaintext exists
    scope: Scope
    role: Role | None


def _origins(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    assert isinstance(value, list)
    return tuple(str(item) for item in value)


class ProjectStore:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader

    def create_project(self, name: str, *, locale: str | None, timezone: str | None) -> Project:
        with self.writer.begin() as conn:
            project_id = conn.execute(
                sa.insert(projects).returning(projects.c.id),
                {"name": name, "locale": locale, "timezone": timezone, "created_at": _now()},
            ).scalar_one()
        return Project(id=project_id, name=name, locale=locale, timezone=timezone)

    def get_project(self, project_id: int) -> Project:
        with self.reader.connect() as conn:
            row = conn.execute(sa.select(projects).where(projects.c.id == project_id)).first()
        if row is None:
            raise NotFound(f"No project {project_id}.")
        return Project(
            id=row.id,
            name=row.name,
            locale=row.locale,
            timezone=row.timezone,
            allowed_origins=_origins(row.allowed_origins),
        )

    def set_allowed_origins(self, project_id: int, origins: tuple[str, ...] | None) -> Project:
        """Allow the project's public key from ``origins`` only (None: from any origin).
        ``origins`` are canonical (``domain.origins.normalise_origins``)."""
        with self.writer.begin() as conn:
            updated = conn.execute(
                sa.update(projects)
                .where(projects.c.id == project_id)
                .values(allowed_origins=list(origins) if origins is not None else sa.null())
            ).rowcount
        if not updated:
            raise NotFound(f"No project {project_id}.")
        return self.get_project(project_id)

    def all_allowed_origins(self) -> list[tuple[str, ...] | None]:
        """Every project's allowed origins (None: any), for answering CORS preflights,
        which carry no key and so name no project."""
        with self.reader.connect() as conn:
            rows = conn.execute(sa.select(projects.c.allowed_origins)).scalars().all()
        return [_origins(value) for value in rows]

    def count_projects(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(projects)).scalar_one())

    def demo_project_id(self, name: str = "Demo") -> int | None:
        """The first project of that name (`serve` creates the demo project as "Demo")."""
        with self.reader.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.min(projects.c.id)).where(projects.c.name == name)
            ).scalar()
        return None if found is None else int(found)

    def create_key(
        self, project_id: int, scope: Scope, *, role: Role | None = None, name: str | None = None
    ) -> CreatedKey:
        self.get_project(project_id)
        if scope is Scope.SECRET and role is None:
            role = Role.ADMIN
        if scope is Scope.PUBLIC:
            role = None
        key = generate_key(scope)
        with self.writer.begin() as conn:
            key_id = conn.execute(
                sa.insert(api_keys).returning(api_keys.c.id),
                {
                    "project_id": project_id,
                    "scope": scope.value,
                    "role": role.name.lower() if role else None,
                    "key_hash": hash_key(key),
                    "hint": key[:3] + "…" + key[-4:],
                    "name": name,
                    "created_at": _now(),
                },
            ).scalar_one()
        return CreatedKey(id=key_id, key=key, scope=scope, role=role)

    def revoke_key(self, *, key_id: int | None = None, key: str | None = None) -> int:
        """Revoke by id or by the key itself; returns the key id."""
        condition = api_keys.c.id == key_id if key_id is not None else None
        if key is not None:
            condition = api_keys.c.key_hash == hash_key(key)
        if condition is None:
            raise ValueError("give a key id or a key")
        with self.writer.begin() as conn:
            row = conn.execute(
                sa.update(api_keys)
                .where(condition)
                .values(revoked_at=sa.func.coalesce(api_keys.c.revoked_at, _now()))
                .returning(api_keys.c.id)
            ).first()
        if row is None:
            raise NotFound("No such API key.")
        return int(row[0])

    def find_key(self, key_hash: str) -> ApiKey | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(
                    api_keys.c.id,
                    api_keys.c.project_id,
                    api_keys.c.scope,
                    api_keys.c.role,
                    api_keys.c.revoked_at,
                ).where(api_keys.c.key_hash == key_hash)
            ).first()
        if row is None:
            return None
        return ApiKey(
            id=row.id,
            project_id=row.project_id,
            scope=Scope(row.scope),
            role=Role.parse(row.role) if row.role else None,
            revoked=row.revoked_at is not None,
        )

"""A project's team as the admin's Team page shows and changes it: the accounts with a
role in the project, and the owner accounts (admins of every project).

A change of role runs in one transaction with the check that the project keeps an
enabled admin (``ProjectTeam.set_role``), with the project's role rows locked, so two
admins removing each other at once cannot leave a project nobody can manage.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.auth import Role
from tidings.domain.errors import Conflict, NotFound
from tidings.store.admin import insert_account, put_role
from tidings.store.database import Writer
from tidings.store.tables_admin import admin_accounts, admin_roles

__all__ = ["Member", "ProjectTeam"]


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    email: str
    owner: bool
    role: Role
    disabled: bool
    created_at: int


class ProjectTeam:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader

    def members(self, project_id: int, *, limit: int = 500) -> list[Member]:
        """Owners first, then the project's accounts by email."""
        a = admin_accounts.c
        query = _query(project_id).order_by(a.owner.desc(), a.email).limit(limit)
        with self.reader.connect() as conn:
            return [_member(row) for row in conn.execute(query)]

    def member(self, project_id: int, account_id: int) -> Member | None:
        """The account if it is on the project's team (an owner, or with a role in it)."""
        with self.reader.connect() as conn:
            row = conn.execute(_query(project_id).where(admin_accounts.c.id == account_id)).first()
        return None if row is None else _member(row)

    def account_id(self, email: str) -> int | None:
        with self.reader.connect() as conn:
            found = conn.execute(
                sa.select(admin_accounts.c.id).where(admin_accounts.c.email == email.lower())
            ).scalar_one_or_none()
        return None if found is None else int(found)

    def set_role(self, project_id: int, account_id: int, role: Role | None) -> None:
        """Give the account ``role`` in the project (None: remove its access). Refused
        (Conflict) for an owner account, and when the project would keep no enabled admin."""
        with self.writer.begin() as conn:
            # The project's role rows stay locked to the end (PostgreSQL; SQLite has one
            # writer): two admins removing each other wait for one another.
            conn.execute(
                sa.select(admin_roles.c.account_id)
                .where(admin_roles.c.project_id == project_id)
                .with_for_update()
            ).all()
            row = conn.execute(
                sa.select(admin_accounts.c.owner).where(admin_accounts.c.id == account_id)
            ).first()
            if row is None:
                raise NotFound("There is no such account.", param="account")
            if row.owner:
                raise Conflict(
                    "An owner account is an admin of every project; its access is managed "
                    "with `tidings admin`, not here.",
                    param="account",
                )
            put_role(conn, account_id, project_id, role)
            if _admins(conn, project_id) == 0:
                raise Conflict(  # the with block rolls the change back
                    "This is the project's last admin: give another account the admin role "
                    "first, so somebody can still manage the project.",
                    param="role",
                )

    def create_member(
        self, project_id: int, email: str, password_hash: str, role: Role, *, now: int
    ) -> int:
        """A new (non-owner) account with ``role`` in the project, in one transaction."""
        with self.writer.begin() as conn:
            account_id = insert_account(conn, email, password_hash, owner=False, now=now)
            put_role(conn, account_id, project_id, role)
        return account_id


def _admins(conn: Connection, project_id: int) -> int:
    """Enabled accounts that can manage the project: owners and the project's admins."""
    a, r = admin_accounts.c, admin_roles.c
    owners = sa.select(a.id).where(a.owner.is_(True), a.disabled_at.is_(None))
    admins = (
        sa.select(a.id)
        .select_from(admin_accounts.join(admin_roles, r.account_id == a.id))
        .where(r.project_id == project_id, r.role == "admin", a.disabled_at.is_(None))
    )
    union = sa.union(owners, admins).subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(union)).scalar_one())


def _query(project_id: int) -> sa.Select[tuple[int, str, bool, int | None, int, str | None]]:
    a, r = admin_accounts.c, admin_roles.c
    return (
        sa.select(a.id, a.email, a.owner, a.disabled_at, a.created_at, r.role)
        .select_from(
            admin_accounts.outerjoin(
                admin_roles, sa.and_(r.account_id == a.id, r.project_id == project_id)
            )
        )
        .where(sa.or_(a.owner.is_(True), r.role.is_not(None)))
    )


def _member(row: sa.Row[tuple[int, str, bool, int | None, int, str | None]]) -> Member:
    return Member(
        id=int(row.id),
        email=str(row.email),
        owner=bool(row.owner),
        role=Role.ADMIN if row.owner else Role.parse(str(row.role)),
        disabled=row.disabled_at is not None,
        created_at=int(row.created_at),
    )

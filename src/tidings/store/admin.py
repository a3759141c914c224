"""Admin accounts, their roles per project, sessions and failed sign-ins.

Everything is in the database, so that several API nodes share sessions and count the
same failed sign-ins. Session tokens and passwords are stored only as hashes (the
password hash is made by the caller: ``tidings.admin.passwords``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.admin import Account
from tidings.domain.auth import Role
from tidings.domain.errors import Conflict, NotFound
from tidings.store.database import Writer
from tidings.store.tables_admin import (
    admin_accounts,
    admin_login_failures,
    admin_roles,
    admin_sessions,
)

__all__ = ["AdminStore", "Session", "insert_account", "put_role"]


class Session:
    """A signed-in browser: whose it is, its CSRF token, when it ends."""

    __slots__ = ("account", "csrf_token", "expires_at")

    def __init__(self, account: Account, csrf_token: str, expires_at: int) -> None:
        self.account = account
        self.csrf_token = csrf_token
        self.expires_at = expires_at


class AdminStore:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader

    # -- accounts -------------------------------------------------------------------------

    def create_account(self, email: str, password_hash: str, *, owner: bool, now: int) -> int:
        """A new account (``email`` already normalised); Conflict if the email is taken."""
        with self.writer.begin() as conn:
            return insert_account(conn, email, password_hash, owner=owner, now=now)

    def set_password(self, email: str, password_hash: str, *, now: int) -> int:
        with self.writer.begin() as conn:
            row = conn.execute(
                sa.update(admin_accounts)
                .where(admin_accounts.c.email == email.lower())
                .values(password_hash=password_hash, updated_at=now)
                .returning(admin_accounts.c.id)
            ).first()
            if row is None:
                raise NotFound(f"No account for {email}.", param="email")
            # A new password signs every browser out.
            conn.execute(sa.delete(admin_sessions).where(admin_sessions.c.account_id == row[0]))
        return int(row[0])

    def grant(self, email: str, project_id: int, role: Role | None) -> int:
        """Give the account ``role`` in the project (None: take its access away)."""
        with self.writer.begin() as conn:
            account_id = conn.execute(
                sa.select(admin_accounts.c.id).where(admin_accounts.c.email == email.lower())
            ).scalar_one_or_none()
            if account_id is None:
                raise NotFound(f"No account for {email}.", param="email")
            put_role(conn, int(account_id), project_id, role)
        return int(account_id)

    def credentials(self, email: str) -> tuple[int, str] | None:
        """(account id, password hash) of an enabled account, for signing in."""
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(admin_accounts.c.id, admin_accounts.c.password_hash).where(
                    admin_accounts.c.email == email.lower(),
                    admin_accounts.c.disabled_at.is_(None),
                )
            ).first()
        return (int(row.id), str(row.password_hash)) if row is not None else None

    def rehash(self, account_id: int, password_hash: str, *, now: int) -> None:
        """Store a hash made with newer parameters (argon2's ``check_needs_rehash``)."""
        with self.writer.begin() as conn:
            conn.execute(
                sa.update(admin_accounts)
                .where(admin_accounts.c.id == account_id)
                .values(password_hash=password_hash, updated_at=now)
            )

    def count_accounts(self) -> int:
        with self.reader.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(admin_accounts)).scalar_one()
            )

    @staticmethod
    def _account(conn: Connection, account_id: int) -> Account | None:
        row = conn.execute(
            sa.select(admin_accounts).where(admin_accounts.c.id == account_id)
        ).first()
        if row is None:
            return None
        roles = {
            int(project_id): Role.parse(role)
            for project_id, role in conn.execute(
                sa.select(admin_roles.c.project_id, admin_roles.c.role).where(
                    admin_roles.c.account_id == account_id
                )
            )
        }
        return Account(
            id=int(row.id),
            email=str(row.email),
            owner=bool(row.owner),
            roles=roles,
            disabled=row.disabled_at is not None,
        )

    # -- sessions ---------------------------------------------------------------------------

    def create_session(
        self, account_id: int, token_hash: str, csrf_token: str, *, now: int, expires_at: int
    ) -> None:
        with self.writer.begin() as conn:
            # Expired sessions of anybody go as new ones come: the table stays small.
            conn.execute(sa.delete(admin_sessions).where(admin_sessions.c.expires_at <= now))
            conn.execute(
                sa.insert(admin_sessions).values(
                    token_hash=token_hash,
                    account_id=account_id,
                    csrf_token=csrf_token,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    def session(self, token_hash: str, *, now: int) -> Session | None:
        """The live session of an enabled account with this token hash, or None."""
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(admin_sessions).where(
                    admin_sessions.c.token_hash == token_hash, admin_sessions.c.expires_at > now
                )
            ).first()
            if row is None:
                return None
            account = self._account(conn, int(row.account_id))
        if account is None or account.disabled:
            return None
        return Session(account, str(row.csrf_token), int(row.expires_at))

    def delete_session(self, token_hash: str) -> None:
        with self.writer.begin() as conn:
            conn.execute(sa.delete(admin_sessions).where(admin_sessions.c.token_hash == token_hash))

    # -- failed sign-ins ----------------------------------------------------------------------

    def failures(self, subjects: list[str], *, since: int) -> dict[str, list[int]]:
        """The times of the failed sign-ins of each subject after ``since``."""
        found: dict[str, list[int]] = {s: [] for s in subjects}
        with self.reader.connect() as conn:
            for subject, at in conn.execute(
                sa.select(admin_login_failures.c.subject, admin_login_failures.c.at).where(
                    admin_login_failures.c.subject.in_(subjects),
                    admin_login_failures.c.at > since,
                )
            ):
                found[subject].append(int(at))
        return found

    def record_failure(self, subjects: list[str], *, now: int, forget_before: int) -> None:
        with self.writer.begin() as conn:
            conn.execute(
                sa.delete(admin_login_failures).where(admin_login_failures.c.at < forget_before)
            )
            conn.execute(
                sa.insert(admin_login_failures), [{"subject": s, "at": now} for s in subjects]
            )

    def clear_failures(self, subject: str) -> None:
        """A successful sign-in forgets the account's failures (not the address's)."""
        with self.writer.begin() as conn:
            conn.execute(
                sa.delete(admin_login_failures).where(admin_login_failures.c.subject == subject)
            )


def insert_account(
    conn: Connection, email: str, password_hash: str, *, owner: bool, now: int
) -> int:
    """Insert an account in the caller's transaction; Conflict if the email is taken."""
    email = email.lower()
    taken = conn.execute(
        sa.select(admin_accounts.c.id).where(admin_accounts.c.email == email)
    ).first()
    if taken is not None:
        raise Conflict(f"An account for {email} exists already.", param="email")
    try:
        return int(
            conn.execute(
                sa.insert(admin_accounts).returning(admin_accounts.c.id),
                {
                    "email": email,
                    "password_hash": password_hash,
                    "owner": owner,
                    "created_at": now,
                    "updated_at": now,
                },
            ).scalar_one()
        )
    except sa.exc.IntegrityError:  # created meanwhile by another process
        raise Conflict(f"An account for {email} exists already.", param="email") from None


def put_role(conn: Connection, account_id: int, project_id: int, role: Role | None) -> None:
    """Set the account's role in the project (None: no access), in the caller's transaction."""
    where = sa.and_(admin_roles.c.account_id == account_id, admin_roles.c.project_id == project_id)
    conn.execute(sa.delete(admin_roles).where(where))
    if role is not None:
        conn.execute(
            sa.insert(admin_roles).values(
                account_id=account_id, project_id=project_id, role=role.name.lower()
            )
        )

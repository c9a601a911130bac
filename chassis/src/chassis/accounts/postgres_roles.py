"""PostgreSQL accounts: a login role per service that owns the service's database and nothing else.

The database is created owned by the role (or handed to it, with every object an earlier
superuser-run service created in it), and `CONNECT` is revoked from `PUBLIC`, so no other role
but a superuser can open it. The role gets no attribute beyond LOGIN: it creates no database,
no role, and migrates its own database as its owner. Passwords travel as SCRAM-SHA-256 verifiers
made here, so the server never sees (or logs) one in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import asyncpg

from chassis.accounts.plan import PlanError, PostgresAccount
from chassis.logging import get_logger
from chassis.postgres import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S, database_url

SCRAM_ITERATIONS = 4096
# Attributes a service's role must not have (the bootstrap refuses to adopt such a role).
_PRIVILEGES = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
_ROLE_PRIVILEGES = f"SELECT {', '.join(_PRIVILEGES)} FROM pg_roles WHERE rolname = $1"  # noqa: S608
_log = get_logger(__name__)


def scram_sha_256(password: str, *, salt: bytes | None = None) -> str:
    """The verifier PostgreSQL stores for `password` (RFC 5802 / 7677, as `pg_authid` holds it)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def _statement(conn: asyncpg.Connection, template: str, *values: str) -> None:
    """Run a utility statement (which takes no parameters) built by the server's own `format`, so
    every identifier (%I) and literal (%L) is quoted by PostgreSQL's rules."""
    arguments = "".join(f", ${number}::text" for number in range(2, len(values) + 2))
    sql = await conn.fetchval(f"SELECT format($1{arguments})", template, *values)
    await conn.execute(sql, timeout=COMMAND_TIMEOUT_S)


async def ensure_role(conn: asyncpg.Connection, account: PostgresAccount) -> None:
    """The login role of `account`, created or given its (new) password; one with more rights
    than a login is refused rather than silently kept."""
    role = account.credentials.user
    verifier = scram_sha_256(account.credentials.password)
    row = await conn.fetchrow(_ROLE_PRIVILEGES, role)
    if row is not None and any(row[name] for name in _PRIVILEGES):
        granted = [name.removeprefix("rol") for name in _PRIVILEGES if row[name]]
        raise PlanError(f"role {role!r} of {account.service} has {granted}: only LOGIN is expected")
    if row is None:
        try:
            await _statement(conn, "CREATE ROLE %I LOGIN PASSWORD %L", role, verifier)
            _log.info("postgres_role_created", service=account.service, role=role)
            return
        except asyncpg.DuplicateObjectError:
            pass  # another bootstrap created it meanwhile: set the password below
    await _statement(conn, "ALTER ROLE %I LOGIN PASSWORD %L", role, verifier)


async def ensure_database(conn: asyncpg.Connection, account: PostgresAccount) -> None:
    """`account.database` owned by the role and closed to every other (non-superuser) role."""
    role, database = account.credentials.user, account.database
    owner = await conn.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database
    )
    if owner is None:
        try:
            await _statement(conn, "CREATE DATABASE %I OWNER %I", database, role)
            _log.info("postgres_database_created", service=account.service, database=database)
        except asyncpg.DuplicateDatabaseError:
            owner = await conn.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database
            )
    if owner is not None and owner != role:
        await _statement(conn, "ALTER DATABASE %I OWNER TO %I", database, role)
        _log.info("postgres_database_handed_over", database=database, role=role, previous=owner)
    await _statement(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)


# Objects in the service's database owned by another role (a database made before least
# privilege, migrated by a superuser): each becomes the role's, so that its migrations can alter
# them. Extension members stay with their extension; sequences and indexes follow their table; a
# schema owned by `pg_database_owner` (PostgreSQL 15's public) is the owner's already.
_FOREIGN_OBJECTS = """
SELECT 'SCHEMA' AS kind, format('%I', n.nspname) AS name
  FROM pg_namespace n
 WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
   AND pg_get_userbyid(n.nspowner) NOT IN ($1, 'pg_database_owner')
UNION ALL
SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                      WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                      ELSE 'TABLE' END,
       format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
   AND pg_get_userbyid(c.relowner) <> $1
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                   AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e'))
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
   AND p.prokind IN ('f', 'p') AND pg_get_userbyid(p.proowner) <> $1
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                   AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
       format('%I.%I', n.nspname, t.typname)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
   AND t.typtype IN ('e', 'd', 'r') AND pg_get_userbyid(t.typowner) <> $1
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                   AND d.objid = t.oid AND d.deptype IN ('e', 'i'))
"""


async def hand_over_objects(admin_url: str, account: PostgresAccount) -> int:
    """Make every object of the service's database the role's; how many changed hands."""
    url = database_url(admin_url, account.database)
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    try:
        role = account.credentials.user
        rows = await conn.fetch(_FOREIGN_OBJECTS, role, timeout=COMMAND_TIMEOUT_S)
        quoted_role = await conn.fetchval("SELECT quote_ident($1)", role)
        async with conn.transaction():
            for row in rows:
                await conn.execute(
                    f"ALTER {row['kind']} {row['name']} OWNER TO {quoted_role}",
                    timeout=COMMAND_TIMEOUT_S,
                )
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)
    if rows:
        _log.info("postgres_objects_handed_over", database=account.database, count=len(rows))
    return len(rows)


async def apply(admin_url: str, accounts: tuple[PostgresAccount, ...]) -> None:
    """Every role, its database and the objects in it, through the administrator at `admin_url`."""
    if not accounts:
        return
    conn = await asyncpg.connect(database_url(admin_url, "postgres"), timeout=CONNECT_TIMEOUT_S)
    try:
        for account in accounts:
            await ensure_role(conn, account)
            await ensure_database(conn, account)
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)
    for account in accounts:
        await hand_over_objects(admin_url, account)


async def verify(account: PostgresAccount) -> None:
    """The role logs in to its database with the URL the service is given."""
    url = database_url(account.credentials.url, account.database)
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.fetchval("SELECT 1", timeout=COMMAND_TIMEOUT_S)
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)

"""Least privilege in PostgreSQL: the roles besides the owner, kept by the migrator.

- the owner (`lorepin`, the role the database was initialised with): migrations, DDL,
  physical backups (pgBackRest) and the toolkit's own records (schema `lorepin_ops`);
- `lorepin_cms`: what the CMS connects as. Reads and writes the rows of its tables, and
  nothing more: no DDL (it owns nothing, and may not create in any schema), no write to
  `alembic_version`, only a read of the migrator's checksums (its compatibility check);
- `lorepin_report`: read-only, a group role (NOLOGIN) an operator grants to a person's own
  login. It reads the CMS's tables except the token hashes;
- `lorepin_monitor`: `pg_monitor` (statistics) and a read of the CMS's activity table (the
  exporter's sessions-seen figure); it logs in with its own password when one is given
  (the metrics exporter connects as it);
- `lorepin_backup`: `pg_read_all_data`, nothing else: `pg_dump` of the logical backups
  (and the drill's copy) runs as it (`--role`, after the owner connected over the
  database container's socket). It never logs in itself (NOLOGIN: no password it could
  give itself opens a door).

Every run of the migrator that holds the migration lock applies this whole: the roles
exist, the CMS's password is the one in its secret, and the grants (with the default
privileges that cover the tables later revisions create) are in place. It is idempotent,
and safe after a restore. The password is sent as a SCRAM verifier made here, so no log
line of the server can ever show it.
"""

from __future__ import annotations

CMS_ROLE = "lorepin_cms"
REPORT_ROLE = "lorepin_report"
MONITOR_ROLE = "lorepin_monitor"
BACKUP_ROLE = "lorepin_backup"

# Constant text (the role names are the constants above, written out), every table named
# with its schema: a restore runs it after pg_restore's script has emptied the search_path.
# Authoritative: what the roles hold beyond it (a grant by hand, a setting a role gave
# itself, a membership) is taken back first, in the same transaction, so no client ever
# sees a gap.
OURS = "lorepin_cms, lorepin_report, lorepin_monitor, lorepin_backup"
GRANTS = (
    """DO $$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lorepin_cms') THEN
        CREATE ROLE lorepin_cms NOLOGIN;
      END IF;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lorepin_report') THEN
        CREATE ROLE lorepin_report NOLOGIN;
      END IF;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lorepin_monitor') THEN
        CREATE ROLE lorepin_monitor NOLOGIN;
      END IF;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lorepin_backup') THEN
        CREATE ROLE lorepin_backup NOLOGIN;
      END IF;
    END $$""",
    # Back to nothing: attributes, settings, memberships, privileges.
    *(
        f"ALTER ROLE {r} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
        "CONNECTION LIMIT -1"
        for r in OURS.split(", ")
    ),
    *(f"ALTER ROLE {r} RESET ALL" for r in OURS.split(", ")),
    "ALTER ROLE lorepin_report NOLOGIN",  # a group: people log in as themselves
    "ALTER ROLE lorepin_backup NOLOGIN PASSWORD NULL",  # taken on by pg_dump --role
    # No large objects: the CMS has none, and one made by a client would break restores.
    "REVOKE EXECUTE ON FUNCTION pg_catalog.lo_create(oid), pg_catalog.lo_creat(integer), "
    "pg_catalog.lo_from_bytea(oid, bytea) FROM PUBLIC",
    """DO $$ DECLARE m record; BEGIN
      FOR m IN SELECT a.roleid::regrole AS granted, a.member::regrole AS member
               FROM pg_auth_members a
               WHERE a.member::regrole::text IN ('lorepin_cms', 'lorepin_report', 'lorepin_monitor',
                                                 'lorepin_backup')
                 AND (a.member::regrole::text, a.roleid::regrole::text) NOT IN (
                   ('lorepin_monitor', 'pg_monitor'), ('lorepin_backup', 'pg_read_all_data')) LOOP
        EXECUTE format('REVOKE %s FROM %s', m.granted, m.member);
      END LOOP;
    END $$""",
    f"REVOKE ALL ON DATABASE {{database}} FROM {OURS}",
    f"REVOKE ALL ON SCHEMA public, lorepin_ops FROM {OURS}",
    f"REVOKE ALL ON ALL TABLES IN SCHEMA public, lorepin_ops FROM {OURS}",
    f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public, lorepin_ops FROM {OURS}",
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {OURS}",
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {OURS}",
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    "REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC",  # no temporary tables either
    # Then what each may do.
    "GRANT pg_monitor TO lorepin_monitor",
    "GRANT pg_read_all_data TO lorepin_backup",
    f"GRANT CONNECT ON DATABASE {{database}} TO {OURS}",
    f"GRANT USAGE ON SCHEMA public TO {OURS}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO lorepin_cms",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO lorepin_cms",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO lorepin_report",
    # A database downgraded below a table has none of it.
    """DO $$ BEGIN
      IF to_regclass('public.alembic_version') IS NOT NULL THEN
        REVOKE INSERT, UPDATE, DELETE ON public.alembic_version FROM lorepin_cms;
      END IF;
      IF to_regclass('public.api_tokens') IS NOT NULL THEN
        REVOKE SELECT ON public.api_tokens FROM lorepin_report;
      END IF;
      IF to_regclass('public.activity') IS NOT NULL THEN
        GRANT SELECT ON public.activity TO lorepin_monitor;
      END IF;
    END $$""",
    # Tables the owner creates later (a new revision, a restore) come with the same grants.
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO lorepin_cms",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO lorepin_cms",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO lorepin_report",
    # The CMS's compatibility check reads which revisions were applied; nothing else there.
    "GRANT USAGE ON SCHEMA lorepin_ops TO lorepin_cms",
    "GRANT SELECT ON lorepin_ops.migration_checksums TO lorepin_cms",
)
# A client session in the way (a transaction holding a role's row) stops the run, named,
# instead of stalling every later migrator behind the migration lock.
LOCK_TIMEOUT = "10s"

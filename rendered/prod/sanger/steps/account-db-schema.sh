db=/var/vmaildb/user.db
v=$(sqlite3 "$db" 'PRAGMA user_version;')
if [ "$v" -lt 1 ]; then sqlite3 "$db" <<'SQL'
BEGIN;
CREATE TABLE IF NOT EXISTS account (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  localpart VARCHAR(128) NOT NULL COLLATE NOCASE,
  domain    VARCHAR(128) NOT NULL COLLATE NOCASE,
  password  VARCHAR(255) NOT NULL,
  realname  VARCHAR(64)  NULL,
  active    INTEGER      NOT NULL DEFAULT 1,
  quota     INTEGER      NOT NULL DEFAULT 0,
  filter    BLOB         NULL,
  UNIQUE (localpart, domain),
  CHECK (localpart NOT LIKE '.%' AND instr(localpart, '/') = 0)
);
PRAGMA user_version = 1;
COMMIT;
SQL
fi
chown root:vmail "$db"; chmod 0640 "$db"
echo "account DB schema version $(sqlite3 "$db" 'PRAGMA user_version;')"

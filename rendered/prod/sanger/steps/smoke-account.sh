pw=$(cat)
hash="{SHA512-CRYPT}$(printf '%s' "$pw" | openssl passwd -6 -stdin)"
sqlite3 /var/vmaildb/user.db <<SQL
INSERT INTO account (localpart, domain, password, realname, quota) VALUES ('smoke', 'wikimedia.org', '$hash', 'mailinfra smoke test', 0)
  ON CONFLICT (localpart, domain) DO UPDATE SET password = excluded.password, active = 1;
SQL

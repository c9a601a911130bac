#!/bin/sh
# Start Redis with its users in an ACL file on the data volume: the administrator (`default`,
# password REDIS_PASSWORD) and the services' users, which platform-bootstrap adds and saves there
# (ACL SAVE), so that a restarted Redis still knows them. The administrator's line follows
# REDIS_PASSWORD at every start (as a SHA-256, never in clear); the services' lines are kept as
# saved. Arguments go to redis-server; REDIS_ACL_FILE moves the file (default /data/users.acl).
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD is required}"
acl="${REDIS_ACL_FILE:-/data/users.acl}"
touch "$acl"
digest=$(printf '%s' "$REDIS_PASSWORD" | sha256sum | cut -d ' ' -f 1)
{
  grep -v '^user default ' "$acl" || true
  printf 'user default on #%s ~* &* +@all\n' "$digest"
} >"$acl.new"
mv "$acl.new" "$acl"
exec redis-server --aclfile "$acl" "$@"

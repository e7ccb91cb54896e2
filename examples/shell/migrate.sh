#!/bin/sh
# A database job that needs a password and holds none: `vault-cli run` starts it with DB_USER
# and DB_PASSWORD in its environment, and only there.
#
#   vault-cli run --tenant acme --env-file examples/shell/db.env -- examples/shell/migrate.sh
#
# A real job would run e.g. `PGPASSWORD="$DB_PASSWORD" psql -U "$DB_USER" ...`; this one shows
# what it got without printing the password.
set -eu
: "${DB_USER:?run me through vault-cli run (DB_USER is not set)}"
: "${DB_PASSWORD:?run me through vault-cli run (DB_PASSWORD is not set)}"
fingerprint=$(printf '%s' "$DB_PASSWORD" | sha256sum | cut -c1-16)
echo "migrating as $DB_USER (password-sha256=$fingerprint)"
# The vault token stays with vault-cli.
if [ -n "${VAULT_TOKEN:-}" ]; then
    echo "unexpected: VAULT_TOKEN reached the job" >&2
    exit 3
fi
echo "migration done"

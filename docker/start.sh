#!/usr/bin/env bash
# Start the whole stack with one command. On first use it writes docker/.env from .env.example with
# every required secret generated (JWT, API secret key, Fernet key, Postgres password, the dashboard's login); an existing .env is never
# overwritten (a required secret missing from it is appended, and said so). Then it builds and starts:
#   bash docker/start.sh                 # docker compose up -d --build
#   bash docker/start.sh --profile gpu   # extra arguments go to docker compose (before "up")
#   bash docker/start.sh --config-only   # write .env if missing and print the resolved compose file; start nothing
#   bash docker/start.sh -f compose.real-gcs.yaml -f compose.external-mongo.yaml   # your bucket and MongoDB
# COMPOSE overrides the compose command (default: docker compose).
set -euo pipefail
cd "$(dirname "$0")"

token() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
fernet() { python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'; }
generate() { if [[ $1 == AIRFLOW_FERNET_KEY ]]; then fernet; else token; fi; }
REQUIRED=(AIRFLOW_JWT_SECRET AIRFLOW_API_SECRET_KEY AIRFLOW_FERNET_KEY AIRFLOW_DB_PASSWORD DASHBOARD_PASSWORD MONITOR_DASHBOARD_SECRET_KEY)
# The dashboard's login: user "admin" with DASHBOARD_PASSWORD, as the scrypt hash werkzeug checks (the format of
# `monitor hash-password`), single-quoted so that compose reads its "$" literally.
dashboard_users() {
  python3 -c 'import hashlib, json, secrets, string, sys
salt = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))
digest = hashlib.scrypt(sys.argv[1].encode(), salt=salt.encode(), n=32768, r=8, p=1, maxmem=132 * 32768 * 8).hex()
print(json.dumps({"admin": f"scrypt:32768:8:1${salt}${digest}"}))' "$1"
}

umask 077  # the .env holds secrets: readable by its owner only
if [[ ! -f .env ]]; then
  cp .env.example .env.new
  for name in "${REQUIRED[@]}"; do
    value=$(generate "$name")
    sed -i "s|^${name}=.*|${name}=${value}|" .env.new
  done
  mv .env.new .env
  echo "start.sh: wrote docker/.env with generated secrets (kept on later starts)" >&2
else
  for name in "${REQUIRED[@]}"; do
    if ! grep -Eq "^${name}=.+" .env; then
      printf '%s=%s\n' "$name" "$(generate "$name")" >> .env
      echo "start.sh: docker/.env had no ${name}; appended a generated one" >&2
    fi
  done
fi

if ! grep -Eq "^MONITOR_DASHBOARD_USERS=.+" .env; then
  password=$(sed -n 's/^DASHBOARD_PASSWORD=//p' .env | tail -n 1)
  sed -i '/^MONITOR_DASHBOARD_USERS=$/d' .env
  printf "MONITOR_DASHBOARD_USERS='%s'\n" "$(dashboard_users "$password")" >> .env
  echo "start.sh: the dashboard asks for user admin and DASHBOARD_PASSWORD (in docker/.env)" >&2
fi

read -r -a compose <<< "${COMPOSE:-docker compose}"
# Say what is missing before compose does (a Docker CLI without the compose plugin reads "compose" as an image).
if ! command -v "${compose[0]}" > /dev/null; then
  echo "start.sh: ${compose[0]} is not installed: install Docker Engine with the compose plugin (https://docs.docker.com/engine/install/), or set COMPOSE" >&2
  exit 127
fi
if ! "${compose[@]}" version > /dev/null 2>&1; then
  echo "start.sh: '${compose[*]} version' failed: install the Docker compose plugin v2 (https://docs.docker.com/compose/install/linux/), or set COMPOSE" >&2
  exit 127
fi
if [[ ${1:-} == --config-only ]]; then
  shift
  exec "${compose[@]}" -f compose.yaml "$@" config
fi
exec "${compose[@]}" -f compose.yaml "$@" up -d --build

#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 (QMA_POSTGRES_HOST and
# QMA_POSTGRES_PORT override the address) and lets user postgres in over TCP without a password,
# as the PostgreSQL tests log in (each creates its own database), saying what it did:
#   - psql (the client, which the tests use too) missing: installs Debian's postgresql-client
#     with apt-get (needs root);
#   - already running: nothing to start;
#   - something else holds the port (it accepts but does not answer as PostgreSQL): says so and
#     fails;
#   - Debian's PostgreSQL installed but stopped: starts the newest version's cluster `main`
#     (pg_ctlcluster --skip-systemctl-redirect <version> main start; needs root or the user
#     postgres), which must be configured for the port asked for, else says so and fails;
#     QMA_POSTGRES_CLUSTER names another cluster of that version (tests/ensure_scripts.rs starts
#     a private one this way);
#   - not installed: installs Debian's postgresql with apt-get (needs root), then starts it.
# Then it logs in (psql -U postgres -d postgres, never a password); if the server demands one it
# says which pg_hba.conf line a test machine needs and fails, except on a cluster it has just
# installed itself, where as root it adds `host all all 127.0.0.1/32 trust` and reloads.
# Waits at most QMA_POSTGRES_START_TIMEOUT seconds (default 30) for a server it starts. Used by
# `make run` and `make test`; never stops a server; safe to run again.
set -euo pipefail

HOST=${QMA_POSTGRES_HOST:-127.0.0.1}
PORT=${QMA_POSTGRES_PORT:-5432}
START_TIMEOUT=${QMA_POSTGRES_START_TIMEOUT:-30}
CLUSTER=${QMA_POSTGRES_CLUSTER:-main}
TRUST_LINE="host all all 127.0.0.1/32 trust"

say() { echo "[ensure-postgres] $*"; }

# Bounded: a remote address may drop the connection attempt rather than refuse it.
port_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$PORT" 2>/dev/null; }

# pg_isready's status: 0 accepting connections, 1 rejecting them (starting up or shutting down),
# 2 no answer (nothing there, or not PostgreSQL), 3 no attempt (bad parameters).
probe() {
  local status=0
  timeout 5 pg_isready -q -h "$HOST" -p "$PORT" -t 2 >/dev/null 2>&1 || status=$?
  [ $status = 124 ] && status=2
  return $status
}

# Waits until the server accepts connections, at most until $deadline (SECONDS).
wait_ready() {
  while [ $SECONDS -lt "$deadline" ]; do
    probe && return 0
    sleep 0.2
  done
  probe
}

# The tests' login: user postgres over TCP, never a password (no PGPASSWORD, no ~/.pgpass).
login() {
  env -u PGPASSWORD -u PGSERVICE PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
    psql -X -w -h "$HOST" -p "$PORT" -U postgres -d postgres -Atc 'select 1' </dev/null 2>&1
}

local_host() { case $HOST in 127.0.0.1 | localhost | ::1) return 0 ;; *) return 1 ;; esac; }

. "$(dirname "$0")/lib/apt.sh"

# On Debian /usr/bin/psql is a wrapper that exists without any client version behind it.
if ! psql --version >/dev/null 2>&1; then
  apt_install "psql (the PostgreSQL client)" postgresql-client
  say "installed $(psql --version)"
fi

installed_now=0
version= cluster_port= cluster_status= owner= log=
# Debian's newest PostgreSQL and its cluster $CLUSTER: version, port, status, owner, log file.
find_cluster() {
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  [ -n "$version" ] && [ -d "/etc/postgresql/$version/$CLUSTER" ] && command -v pg_ctlcluster >/dev/null 2>&1 || return 1
  local line
  line=$(pg_lsclusters -h "$version" "$CLUSTER" 2>/dev/null | head -n 1) || return 1
  [ -n "$line" ] || return 1
  read -r _ _ cluster_port cluster_status owner _ log _ <<<"$line"
}

status=0
probe || status=$?
if [ $status = 0 ]; then
  say "PostgreSQL is already running on $HOST:$PORT"
elif [ $status = 1 ]; then
  say "PostgreSQL on $HOST:$PORT rejects connections (starting up?): waiting up to ${START_TIMEOUT}s for it to accept them"
  deadline=$((SECONDS + START_TIMEOUT))
  if ! wait_ready; then
    say "PostgreSQL on $HOST:$PORT still rejects connections after ${START_TIMEOUT}s (shutting down, or in recovery?); its log says why" >&2
    exit 1
  fi
  say "PostgreSQL accepts connections on $HOST:$PORT"
elif port_open; then
  say "something accepts connections on $HOST:$PORT but does not answer as PostgreSQL (pg_isready): another program holds the port; not starting PostgreSQL there" >&2
  exit 1
elif ! local_host; then
  say "nothing answers on $HOST:$PORT, which is not this machine: start PostgreSQL there, or unset QMA_POSTGRES_HOST" >&2
  exit 1
else
  if ! find_cluster; then
    apt_install "the PostgreSQL server" postgresql
    installed_now=1
    if ! find_cluster; then
      say "installed Debian's postgresql, but found no cluster '$CLUSTER' under /etc/postgresql (pg_lsclusters lists what there is; pg_createcluster <version> $CLUSTER makes one)" >&2
      exit 1
    fi
    say "installed PostgreSQL $version (cluster $version/$CLUSTER, port $cluster_port, $cluster_status)"
  fi
  if [ "$cluster_port" != "$PORT" ]; then
    say "nothing answers on $HOST:$PORT, and Debian's cluster $version/$CLUSTER is configured for port $cluster_port ($cluster_status), not $PORT: not starting it; set QMA_POSTGRES_PORT=$cluster_port, or change port in /etc/postgresql/$version/$CLUSTER/postgresql.conf" >&2
    exit 1
  fi
  deadline=$((SECONDS + START_TIMEOUT))
  # The package may have started it itself (its postinst does where services may start).
  if [ $installed_now = 1 ] && probe; then
    say "the package started PostgreSQL $version on $HOST:$PORT"
  else
    if [ "$cluster_status" = online ]; then
      say "Debian's cluster $version/$CLUSTER is running on port $PORT but does not answer on $HOST:$PORT: check listen_addresses in /etc/postgresql/$version/$CLUSTER/postgresql.conf; its log is $log" >&2
      exit 1
    fi
    start=(pg_ctlcluster --skip-systemctl-redirect "$version" "$CLUSTER" start)
    if [ "$(id -u)" -ne 0 ] && [ "$(id -un)" != "$owner" ]; then
      say "PostgreSQL $version (cluster $CLUSTER) is installed but stopped, and only root or $owner may start it: run 'sudo ${start[*]}' and retry" >&2
      exit 1
    fi
    say "PostgreSQL $version is installed but stopped: starting it (${start[*]}), waiting up to ${START_TIMEOUT}s for it to accept connections on $HOST:$PORT"
    started=0
    output=$(timeout "$START_TIMEOUT" "${start[@]}" </dev/null 2>&1) || started=$?
    if [ $started = 124 ]; then
      say "${start[*]} did not return within ${START_TIMEOUT}s" >&2
    elif [ $started != 0 ]; then
      # pg_ctlcluster has waited itself, and gives up early when the server dies.
      say "${start[*]} failed (status $started):" >&2
      printf '%s\n' "$output" | tail -n 5 | sed 's/^/    /' >&2
      deadline=$SECONDS
    fi
    if ! wait_ready; then
      if [ $started != 0 ] && [ $started != 124 ]; then
        say "PostgreSQL does not answer on $HOST:$PORT; see $log" >&2
      else
        say "PostgreSQL did not answer on $HOST:$PORT within ${START_TIMEOUT}s; see $log" >&2
      fi
      tail -n 5 "$log" 2>/dev/null | sed 's/^/    /' >&2 || true
      exit 1
    fi
    say "PostgreSQL $version is up on $HOST:$PORT"
  fi
fi

# The tests' login.
if said=$(login); then
  say "user postgres logs in over TCP on $HOST:$PORT without a password"
  exit 0
fi
case $said in
  *password*) ;;
  *)
    say "PostgreSQL answers on $HOST:$PORT but user postgres cannot log in to database postgres:" >&2
    printf '%s\n' "$said" | sed 's/^/    /' >&2
    exit 1
    ;;
esac
hba="the server's pg_hba.conf (psql -c 'show hba_file' as a user that may log in says where)"
# Name Debian's file when it is Debian's cluster that answers.
if [ -n "$version" ] || { local_host && find_cluster && [ "$cluster_port" = "$PORT" ]; }; then
  [ -f "/etc/postgresql/$version/$CLUSTER/pg_hba.conf" ] && hba=/etc/postgresql/$version/$CLUSTER/pg_hba.conf
fi
if [ $installed_now = 1 ] && [ "$(id -u)" -eq 0 ] && [ -f "$hba" ]; then
  # pg_hba.conf is read top down, first match wins: the line goes before every other rule.
  say "PostgreSQL asks user postgres for a password over TCP; this script installed it just now, so it puts '$TRUST_LINE' first in $hba and reloads"
  sed -i "0,/^[[:space:]]*[^#[:space:]]/s||# Added by queue-metrics-adapter's scripts/ensure-postgres.sh: the tests log in without a password.\n$TRUST_LINE\n&|" "$hba"
  grep -qx "$TRUST_LINE" "$hba" || printf '%s\n' "$TRUST_LINE" >>"$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" "$CLUSTER" reload
  sleep 1
  if said=$(login); then
    say "user postgres logs in over TCP on $HOST:$PORT without a password"
    exit 0
  fi
  say "user postgres still cannot log in over TCP on $HOST:$PORT:" >&2
  printf '%s\n' "$said" | sed 's/^/    /' >&2
  exit 1
fi
say "PostgreSQL on $HOST:$PORT asks user postgres for a password over TCP ($(printf '%s' "$said" | tail -n 1)); the tests log in without one" >&2
say "on a test machine, put '$TRUST_LINE' before the other host lines of $hba and reload (pg_ctlcluster ${version:-<version>} $CLUSTER reload, or select pg_reload_conf()), then run this again" >&2
exit 1

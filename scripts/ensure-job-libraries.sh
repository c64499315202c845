#!/usr/bin/env bash
# Installs the job libraries whose real clients and workers the job-library tests drive, at
# pinned versions, under target/job-libraries/ (nothing system-wide but Debian's Sidekiq),
# saying what it did; a second run with everything in place only checks:
# - Python (PyPI): RQ, dramatiq, arq and huey in a virtualenv at target/job-libraries/venv, with
#   the redis client arq accepts (< 6), and pika (dramatiq's RabbitMQ broker); Celery + kombu
#   (with py-amqp, its RabbitMQ transport) in target/job-libraries/venv-celery, with the redis
#   client kombu 5.7 requires (>= 6.1): one environment cannot hold both.
# - Node.js (npm, at target/job-libraries/node): BullMQ's current major, BullMQ 5 (the last
#   major with a separate `paused` list) as `bullmq5`, and bee-queue.
# - Ruby: Debian's ruby-sidekiq (Sidekiq 6.4; 7 and 8 are not packaged), with apt-get as root.
# - PostgreSQL job tables: procrastinate (with psycopg 3) and River's Python client (riverqueue,
#   through SQLAlchemy with psycopg or asyncpg) in target/job-libraries/venv-postgres; pg-boss
#   and graphile-worker (npm) in target/job-libraries/node-postgres, apart from the node
#   folder so neither's pins move the other's.
# Usage: scripts/ensure-job-libraries.sh [python|node|sidekiq|postgres ...] (default: all four).
set -euo pipefail

say() { echo "[ensure-job-libraries] $*"; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${QMA_JOB_LIBRARIES_DIR:-$ROOT/target/job-libraries}"

# The pinned versions (issue 32; ../shared/reference/job-libraries.md read these).
PYTHON_PACKAGES=(
  "rq==3.0.0"
  "dramatiq[redis]==2.2.1"
  "arq==0.28.0"
  "huey==3.5.4"
  "redis==5.2.1"
  "pika==1.3.2"
)
CELERY_PACKAGES=(
  "celery==5.7.0"
  "kombu==5.7.0"
  "amqp==5.4.2"
  "redis==8.2.0"
  "packaging==26.3"
)
NODE_PACKAGES=(
  "bullmq@6.7.6"
  "bullmq5@npm:bullmq@5.81.5"
  "bee-queue@2.0.0"
)
SIDEKIQ_PACKAGE="ruby-sidekiq"
# The PostgreSQL job libraries; the drivers at the versions pip resolved for these pins (Python
# 3.11) and that log in to the local PostgreSQL.
POSTGRES_PYTHON_PACKAGES=(
  "procrastinate==3.10.0"
  "psycopg[binary]==3.3.9"
  "riverqueue==0.7.0"
  "sqlalchemy[asyncio]==2.1.9"
  "asyncpg==0.32.0"
)
POSTGRES_NODE_PACKAGES=(
  "pg-boss@10.4.2"
  "graphile-worker@0.17.3"
)

# pinned <dir> <pins...>: whether <dir> was installed with exactly these pins (said when so).
pinned() {
  local dir="$1"
  shift
  [ -f "$dir/.qma-pinned" ] && [ "$(cat "$dir/.qma-pinned")" = "$(printf '%s\n' "$@")" ] || return 1
  say "installed in $dir: $*"
}

# record_pins <dir> <pins...>: what <dir> now holds, for `pinned`.
record_pins() {
  local dir="$1"
  shift
  printf '%s\n' "$@" >"$dir/.qma-pinned"
}

# python_env <dir> <import check> <packages...>: a virtualenv holding exactly these pins.
python_env() {
  local venv="$1" check="$2"
  shift 2
  [ -x "$venv/bin/python" ] && pinned "$venv" "$@" && return 0
  command -v python3 >/dev/null 2>&1 || { say "python3 is missing: install Python 3 and retry" >&2; exit 1; }
  say "installing $* from PyPI into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  "$venv/bin/python" -m pip check >/dev/null
  record_pins "$venv" "$@"
  say "installed: $("$venv/bin/python" -c "$check")"
}

python_libraries() {
  python_env "$DIR/venv" 'import rq, dramatiq, arq, huey, redis, pika; print("rq", rq.__version__, "dramatiq", dramatiq.__version__, "arq", arq.VERSION, "huey", huey.__version__, "redis", redis.__version__, "pika", pika.__version__)' "${PYTHON_PACKAGES[@]}"
  python_env "$DIR/venv-celery" 'import celery, kombu, redis, amqp, kombu.transport.redis; print("celery", celery.__version__, "kombu", kombu.__version__, "amqp", amqp.__version__, "redis", redis.__version__)' "${CELERY_PACKAGES[@]}"
}

# node_env <dir> <packages...>: an npm folder holding exactly these pins (true when it was
# already in place).
node_env() {
  local node="$1"
  shift
  [ -d "$node/node_modules" ] && pinned "$node" "$@" && return 0
  command -v npm >/dev/null 2>&1 || { say "npm is missing: install Node.js and npm and retry" >&2; exit 1; }
  say "installing $* from npm into $node"
  rm -rf "$node"
  mkdir -p "$node"
  (cd "$node" && echo '{"name":"qma-job-libraries","private":true}' >package.json &&
    npm install --silent --no-audit --no-fund --save-exact "$@" >/dev/null)
  record_pins "$node" "$@"
  return 1
}

node_libraries() {
  local node="$DIR/node"
  node_env "$node" "${NODE_PACKAGES[@]}" && return 0
  say "installed: bullmq $(node -p "require('$node/node_modules/bullmq/package.json').version"), bullmq5 $(node -p "require('$node/node_modules/bullmq5/package.json').version"), bee-queue $(node -p "require('$node/node_modules/bee-queue/package.json').version")"
}

postgres_libraries() {
  python_env "$DIR/venv-postgres" 'import procrastinate, riverqueue, sqlalchemy, psycopg, asyncpg, riverqueue.driver.riversqlalchemy; from importlib.metadata import version; print("procrastinate", procrastinate.__version__, "riverqueue", version("riverqueue"), "sqlalchemy", sqlalchemy.__version__, "psycopg", psycopg.__version__, "asyncpg", asyncpg.__version__)' "${POSTGRES_PYTHON_PACKAGES[@]}"
  local node="$DIR/node-postgres"
  node_env "$node" "${POSTGRES_NODE_PACKAGES[@]}" && return 0
  # Loading them, not only their package.json: both must run on this Node.js.
  say "installed: $(cd "$node" && node -e "require('pg-boss'); require('graphile-worker'); const v = (p) => require(p + '/package.json').version; console.log('pg-boss', v('pg-boss') + ',', 'graphile-worker', v('graphile-worker') + ',', 'pg', v('pg') + ',', 'node', process.versions.node)")"
}

# Not named `sidekiq`: `command -v sidekiq` would then find this function, not the command.
sidekiq_library() {
  if command -v sidekiq >/dev/null 2>&1 && ruby -e 'require "sidekiq"' >/dev/null 2>&1; then
    say "Sidekiq is installed ($(ruby -e 'require "sidekiq"; print Sidekiq::VERSION'), Debian's $SIDEKIQ_PACKAGE)"
    return 0
  fi
  . "$(dirname "$0")/lib/apt.sh"
  apt_install_missing sidekiq "$SIDEKIQ_PACKAGE" --no-install-recommends
  say "installed Sidekiq $(ruby -e 'require "sidekiq"; print Sidekiq::VERSION')"
}

mkdir -p "$DIR"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(python node sidekiq postgres)
for part in "${parts[@]}"; do
  case "$part" in
    python) python_libraries ;;
    node) node_libraries ;;
    sidekiq) sidekiq_library ;;
    postgres) postgres_libraries ;;
    *) say "unknown part $part (python, node, sidekiq or postgres)" >&2; exit 2 ;;
  esac
done

# Sourced by the PostgreSQL benchmarks (bench-ha.sh, bench-pg-ab.sh): a throwaway PostgreSQL in
# a temporary directory, and the processes to stop with it.
#
#   . scripts/pg-local.sh NAME      # NAME prefixes the error messages
#   pg_start                        # sets work (the temporary directory), pg_bin and port
#   pg_createdb DB
#   ... start nodes, appending their pids to `pids`; the EXIT trap stops them and PostgreSQL.
pg_name=$1
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "$pg_name: PostgreSQL is missing (apt-get install -y postgresql)" >&2; exit 1; }
pids=()
as_pg=()
work=
pg_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$work" ] || return 0
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
pg_start() {
  work=$(mktemp -d)
  chmod 755 "$work"  # the postgres user must reach its directory inside
  trap pg_cleanup EXIT
  mkdir -p "$work/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres "$work/pg"; as_pg=(runuser -u postgres --); fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -A trust -U kms -E UTF8 >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
    -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
}
pg_createdb() {
  "$pg_bin/psql" -X -q -h 127.0.0.1 -p "$port" -U kms -d postgres -c "CREATE DATABASE $1"
}

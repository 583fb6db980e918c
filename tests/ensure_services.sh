#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1 before the tests run.
# Starts them where they are installed but stopped; otherwise fails with one line.
set -u

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  for _ in $(seq 1 30); do answers "$1" && return 0; sleep 1; done
  return 1
}

if ! answers 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start \
      >/dev/null 2>&1 || true
  fi
  wait_for 5432 || {
    echo "make test: PostgreSQL does not answer on 127.0.0.1:5432 and is not installed here (apt install postgresql, or start it)" >&2
    exit 1
  }
fi

if ! answers 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      >/dev/null 2>&1 || true
  fi
  wait_for 6379 || {
    echo "make test: Redis does not answer on 127.0.0.1:6379 and is not installed here (apt install redis-server, or start it)" >&2
    exit 1
  }
fi

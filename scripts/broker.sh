#!/usr/bin/env bash
# Starts or stops a tansu broker on 127.0.0.1.
#   scripts/broker.sh start [PORT] [memory|sqlite]   (default 9092, sqlite under .sluice/broker-PORT/)
#   scripts/broker.sh stop  [PORT]
#   scripts/broker.sh status [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-}"; port="${2:-9092}"; storage="${3:-sqlite}"
dir=".sluice/broker-$port"; pidfile="$dir/tansu.pid"
tansu="${TANSU:-${CARGO_HOME:-$HOME/.cargo}/bin/tansu}"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "$action" in
start)
    scripts/install-tansu.sh
    if running; then echo "tansu already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; exit 0; fi
    mkdir -p "$dir"
    case "$storage" in
        memory) engine="memory://tansu/" ;;
        sqlite) engine="sqlite://tansu.db?maintenance_interval=30s" ;;   # relative to tansu's cwd
        *) echo "storage must be memory or sqlite, not '$storage'" >&2; exit 2 ;;
    esac
    (cd "$dir" && exec nohup "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "$engine" >tansu.log 2>&1) &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "tansu listening on 127.0.0.1:$port ($storage; log $dir/tansu.log)"; exit 0
        fi
        running || { echo "tansu exited; see $dir/tansu.log" >&2; tail -20 "$dir/tansu.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "tansu did not listen on 127.0.0.1:$port within 10 s; see $dir/tansu.log" >&2; exit 1 ;;
stop)
    if running; then kill "$(cat "$pidfile")"; rm -f "$pidfile"; echo "stopped tansu on 127.0.0.1:$port"
    else echo "no tansu running on 127.0.0.1:$port"; rm -f "$pidfile"; fi ;;
status)
    if running; then echo "running (pid $(cat "$pidfile"))"; else echo "stopped"; exit 1; fi ;;
*) echo "usage: scripts/broker.sh start|stop|status [PORT] [memory|sqlite]" >&2; exit 2 ;;
esac

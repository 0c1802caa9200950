#!/usr/bin/env bash
# make bench / make bench-quick: vipmux next to the kernel and HAProxy, in one
# run, on the same links and the same servers. Namespaces and addresses
# (198.18.0.0/15 only) are made here and removed on every exit path.
#
#   client ns ─ c0 ──────── f0 (vipmux, afpacket, no kernel IP)   gateway ns
#   198.18.0.1/16                                        │
#             ─ c1 ──────── h0 198.19.128.2 (HAProxy; kernel router for "direct")
#   198.19.128.1/24                                      │ br0 198.19.0.1/24
#                                       web-a 198.19.0.2 (iperf3, namesrv)  web-b 198.19.0.3
#
# Every figure is the median of RUNS runs, with min and max, and its ratio
# to HAProxy and to the direct kernel path measured in the same run; the
# ratio is taken per round (vipmux and HAProxy measured back to back) and
# reported as the median of the rounds with its spread. The table is
# rewritten after every round; a run that fails part-way says so at its
# top, keeps the figures measured until then and the gateway's log.
#
# Pinning (PIN): the connection shapes are measured twice, unpinned (as a
# real gateway runs) and "pinned": the proxy under test (HAProxy or vipmux)
# on CPU 1, every client and server on CPU 0, the same for every path. On
# two shared cores unpinned runs place the load generator, the servers and
# the proxy differently each time; pinned is the setting that decides an
# A/B. PIN=1 measures only pinned, PIN=0 only unpinned, PIN=both (default)
# both.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then RUNS=${RUNS:-1}; T=${T:-3}; IDLE_N=${IDLE_N:-2000}; SCALE_N=${SCALE_N:-1000}
else RUNS=${RUNS:-3}; T=${T:-10}; IDLE_N=${IDLE_N:-10000}; SCALE_N=${SCALE_N:-10000}; fi
RATE=${RATE:-2000}          # keep-alive requests/s for the latency figure (below saturation)
# Development knobs (defaults: everything, as documented):
#   ONLY=throughput,conns,latency,idle,switch,failover,scale,wan,cluster  measure only these groups
#                               (cluster: two gateways on etcd, kill -9 of an IP's holder; needs etcd)
#   ONLY=syscalls               (only when asked for: strace slows the proxies) syscalls and
#                               front-link packets per connection, both close orders, pinned
#                               HAProxy against vipmux, with the most frequent syscalls
#   WAN_DELAY=20ms WAN_LOSS=0.005  the WAN group's delay (each way) and loss (each frame, each way)
#   PATHS="haproxy vipmux-m1"   paths of the per-path figures (direct haproxy vipmux-m1 vipmux-m2)
#   NIC_EXTRA='offload = false' DISPATCH_EXTRA='time_wait = "10ms"'  extra vipmux config lines
#   CLIENT_PORTS="40000 40511"  narrow the client's ephemeral ports (ports come back fast: TIME_WAIT experiments)
#   OUT=file.md                 where the table goes (default bench/results/DATE-HOST[-quick].md)
#   PPROF_DIR=dir               save CPU and allocation profiles of vipmux per load and path (serve --pprof)
ONLY=${ONLY:-}
PIN=${PIN:-both}
case $PIN in 0|1|both) ;; *) echo "bench: PIN must be 0, 1 or both, not '$PIN'"; exit 2;; esac
[ "$(nproc)" -ge 2 ] || { [ "$PIN" = 0 ] || { echo "bench: pinning needs 2 CPUs (PIN=0 measures unpinned only)"; exit 2; }; }
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
ETCD=${ETCD:-$(command -v etcd || true)}
! want cluster || [ -n "$ETCD" ] || { echo "bench: the cluster group needs etcd (Debian's etcd-server: make deps installs it)"; exit 2; }
BIN=${BIN:-bin/vipmux} NAMESRV=bin/namesrv LOADGEN=bin/loadgen IMPAIR=bin/impair
VIPMUX_ENV=${VIPMUX_ENV:-}  # e.g. VIPMUX_ENV="GOGC=200": environment of the vipmux process only
[ "$(id -u)" = 0 ] || { echo "bench: run as root"; exit 1; }
ulimit -n 20000 2>/dev/null || true

host=$(hostname -s 2>/dev/null || echo host)
suffix=""; [ "$QUICK" != 1 ] || suffix=-quick
out=${OUT:-bench/results/$(date +%Y-%m-%d)-$host$suffix.md}
mkdir -p "$(dirname "$out")"
id=$(printf '%04x' $((RANDOM)))
C=vmxb$id-cli G=vmxb$id-gw A=vmxb$id-a B=vmxb$id-b W=vmxb$id-wan I=vmxb$id-imp KC=vmxb$id-kcli KG=vmxb$id-kgw
tmp=$(mktemp -d /tmp/vipmux-bench.XXXXXX)
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	sleep 0.2
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
	# Whatever still runs in a namespace (a process whose pid was not
	# recorded) goes with it.
	for ns in $C $G $A $B $W $I $KC $KG; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null; done
	for ns in $C $G $A $B $W $I $KC $KG; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# bg runs a server in the background and records its pid; "bg nsx NS cmd"
# starts cmd through ip netns exec (which execs it) so that the pid is the
# server's own, not a subshell's that cleanup could kill while cmd lives on.
bg()  {
	if [ "$1" = nsx ]; then ip netns exec "$2" "${@:3}" & else "$@" & fi
	pids+=($!)
}
log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------- topology
ip netns add $C; ip netns add $G; ip netns add $A; ip netns add $B
for ns in $C $G $A $B; do nsx $ns ip link set lo up; done
ip link add c0 netns $C type veth peer name f0 netns $G
ip link add c1 netns $C type veth peer name h0 netns $G
nsx $C ip addr add 198.18.0.1/16 dev c0
nsx $C ip addr add 198.19.128.1/24 dev c1
nsx $C ip link set c0 up; nsx $C ip link set c1 up
nsx $C ip route add 198.19.0.0/24 via 198.19.128.2
# Frames as from a wire (full checksums), on both client links alike.
for d in c0 c1; do nsx $C ethtool -K $d tx off tso off gso off >/dev/null; done
# A new-connection-per-request load closes ~10,000 connections a figure:
# without TIME_WAIT reuse and a wide port range, later rounds measure
# ephemeral-port exhaustion (HAProxy fell from 14.8k to 955 conn/s once).
# The same settings for the client and the gateway namespace, so for every
# path: the client's ports, HAProxy's and vipmux's backend connections.
for ns in $C $G; do
	nsx $ns sysctl -qw net.ipv4.tcp_tw_reuse=1
	nsx $ns sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
done
[ -z "${CLIENT_PORTS:-}" ] || nsx $C sysctl -qw net.ipv4.ip_local_port_range="$CLIENT_PORTS"
nsx $G sysctl -qw net.ipv4.ip_forward=1
nsx $G ip addr add 198.19.128.2/24 dev h0; nsx $G ip link set h0 up
# The pinned HAProxy (one thread on one CPU) listens on a second address.
nsx $G ip addr add 198.19.128.3/24 dev h0
# vipmux turns GRO on on its own front link (f0), as a physical NIC has it
# on by default; the kernel's front link gets the same, so that HAProxy and
# the direct path receive coalesced segments too.
nsx $G ethtool -K h0 gro on >/dev/null
nsx $G ip link add br0 type bridge; nsx $G ip addr add 198.19.0.1/24 dev br0; nsx $G ip link set br0 up
i=2
for s in $A $B; do
	ip link add e0 netns $s type veth peer name p$i netns $G
	nsx $G ip link set p$i master br0 up
	nsx $s ip addr add 198.19.0.$i/24 dev e0; nsx $s ip link set e0 up
	nsx $s ip route add default via 198.19.0.1
	i=$((i + 1))
done
bg nsx $A iperf3 -s >/dev/null 2>&1
bg nsx $A "$NAMESRV" --name web-a --listen :8080
bg nsx $B "$NAMESRV" --name web-b --listen :8080

# ---------------------------------------------------------------- gateways
cat >"$tmp/haproxy.cfg" <<CFG
global
	maxconn 9000
	nbthread 2
defaults
	mode tcp
	timeout connect 3s
	timeout client 60s
	timeout server 60s
frontend http
	bind 198.19.128.2:8080
	default_backend http
backend http
	server a 198.19.0.2:8080
frontend iperf
	bind 198.19.128.2:5201
	default_backend iperf
backend iperf
	server a 198.19.0.2:5201
CFG
bg nsx $G haproxy -f "$tmp/haproxy.cfg" -db
# The pinned figures' HAProxy: the same proxy with one thread, on CPU 1
# from the start (two threads on one CPU would fight each other), where
# vipmux, pinned, runs with GOMAXPROCS 1 (the Go runtime follows the CPU
# affinity).
sed -e 's/nbthread 2/nbthread 1/' -e 's/198\.19\.128\.2:/198.19.128.3:/' "$tmp/haproxy.cfg" >"$tmp/haproxy-pinned.cfg"
bg nsx $G taskset -c 1 haproxy -f "$tmp/haproxy-pinned.cfg" -db
cat >"$tmp/vipmux.toml" <<TOML
[nic]
driver = "afpacket"
interface = "f0"
networks = ["198.18.0.0/16"]
${NIC_EXTRA:-}
[shared]
address = "198.18.0.100"
[control]
listen = "127.0.0.1:7070"
[state]
path = "$tmp/state.json"
[log]
level = "warn"
[dispatch]
${DISPATCH_EXTRA:-}
# The scale figure measures the table and the stack; duplicate-address
# detection would add its probe wait (2 x 100 ms by default) to every new IP.
[arp]
dad_probes = 0
TOML
ip netns exec $G env $VIPMUX_ENV "$BIN" serve --config "$tmp/vipmux.toml" ${PPROF_DIR:+--pprof 127.0.0.1:6060} 2>"$tmp/vipmux.log" &
pids+=($!)
for _ in $(seq 100); do nsx $G "$BIN" status >/dev/null 2>&1 && break; sleep 0.1; done
VPID=$(pgrep -f "serve --config $tmp/vipmux.toml" | head -1)
# GW_AFTER="ethtool -K f0 gro off": a command run in the gateway namespace once vipmux is up (experiments)
[ -z "${GW_AFTER:-}" ] || nsx $G $GW_AFTER
vmx() { nsx $G "$BIN" "$@" >/dev/null; }
vmx register --name web-a --ip 198.18.0.10 --backend 198.19.0.2
vmx register --name web-a --port 8080 --backend 198.19.0.2:8080 --state active
vmx register --name web-b --port 8080 --backend 198.19.0.3:8080 --state standby
vmx register --name web-a --port 5201 --backend 198.19.0.2:5201
HPID=$(pgrep -f "haproxy -f $tmp/haproxy.cfg" | head -1)
HPID_PINNED=$(pgrep -f "haproxy -f $tmp/haproxy-pinned.cfg" | head -1)
SERVER_PIDS=$(for ns in $A $B; do ip netns pids "$ns"; done | xargs)
# pin 1|0: the proxies on CPU 1 and clients and servers on CPU 0, or all
# of them free on every CPU again. Every thread of a running process moves
# (taskset -a); threads started later inherit it. Clients started by a
# measure get the prefix $CPU0.
pin() {
	if [ "$1" = 1 ]; then
		taskset -a -p -c 1 "$VPID" >/dev/null
		for p in $SERVER_PIDS; do taskset -a -p -c 0 "$p" >/dev/null; done
		CPU0="taskset -c 0"
		TARGET[haproxy]=198.19.128.3
	else
		for p in $VPID $SERVER_PIDS; do taskset -a -p -c "0-$(($(nproc) - 1))" "$p" >/dev/null; done
		CPU0=""
		TARGET[haproxy]=198.19.128.2
	fi
	sleep 2 # the Go runtime adjusts GOMAXPROCS to the new affinity within ~1 s
}
CPU0=""
for _ in $(seq 50); do nsx $C curl -s -m 1 -o /dev/null http://198.18.0.10:8080/ && break; sleep 0.1; done

declare -A TARGET=([direct]=198.19.0.2 [haproxy]=198.19.128.2 [vipmux-m1]=198.18.0.10 [vipmux-m2]=198.18.0.100)
read -r -a PATHS <<<"${PATHS:-direct haproxy vipmux-m1 vipmux-m2}"

# ---------------------------------------------------------------- measures
# Each prints one number.
iperf() { # iperf() IP [iperf3 flags]: Gbit/s received (Mbit/s with UNIT=M), from namespace $IPERF_NS (default the client's)
	local ip=$1 div=1e9; shift
	[ "${UNIT:-G}" != M ] || div=1e6
	# A failed transfer is "none" (iperf3's error on stderr), not a hole.
	nsx "${IPERF_NS:-$C}" iperf3 -c "$ip" -t "$T" -J "$@" 2>/dev/null | python3 -c 'import json,sys
d = json.load(sys.stdin)
if "error" in d or "sum_received" not in d.get("end", {}):
    print("bench: iperf3 failed:", d.get("error", "no result"), file=sys.stderr); print("none")
else:
    print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/'"$div"'))'
}
# active_member PORT: the name of the active member of the shared
# address's PORT.
active_member() {
	nsx $G "$BIN" status --json | python3 -c 'import json,sys
for b in json.load(sys.stdin)["bindings"]:
    if b["port"]=='"$1"':
        print([m["name"] for m in b["members"] if m["state"]=="active"][0])'
}
jget() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
# rss_kib PID: resident memory in KiB; fails, naming the process, if it is gone.
rss_kib() {
	[ -r "/proc/$1/status" ] || { log "bench: process $1 ($(ps -o comm= -p "$1" 2>/dev/null || echo gone)) is not running"; return 1; }
	awk '/VmRSS/ {print $2}' "/proc/$1/status"
}

# prof PATH LOAD cmd...: runs cmd; with PPROF_DIR set and PATH a vipmux
# path, also saves a CPU profile of vipmux taken during cmd.
prof() {
	local p=$1 load=$2; shift 2
	if [ -z "${PPROF_DIR:-}" ] || [[ $p != vipmux-* ]]; then "$@"; return; fi
	mkdir -p "$PPROF_DIR"
	local secs=$((T > 3 ? T - 1 : 2))
	(sleep 0.5; nsx $G curl -s -m $((T + 10)) -o "$PPROF_DIR/$p-$load.cpu.pprof" "http://127.0.0.1:6060/debug/pprof/profile?seconds=$secs") &
	local pp=$!
	# The allocations made during the same window (a delta profile).
	(sleep 0.5; nsx $G curl -s -m $((T + 10)) -o "$PPROF_DIR/$p-$load.allocs.pprof" "http://127.0.0.1:6060/debug/pprof/allocs?seconds=$secs") &
	local pa=$!
	"$@"
	wait "$pp" || true
	wait "$pa" || true
}

# ---------------------------------------------------------------- report
# report writes the table of the figures so far to $out (and prints it with
# "print"): after every round and at the end, and from the ERR trap, so that
# a failure late in a long run does not lose the figures before it.
report() {
python3 - "$out" "$RUNS" "$T" "$(nproc)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "${1:-}" "$STATUS" <<PY
import sys, statistics
out, runs, t, cpus, commit, final, status = sys.argv[1:]
raw = """$(for k in "${!R[@]}"; do printf '%s\t%s\n' "$k" "${R[$k]}"; done)"""
figs = {}
order = []
for line in raw.strip().splitlines():
    key, vals = line.split("\t")
    fig, path = key.split("|")
    if fig not in order: order.append(fig)
    figs.setdefault(fig, {})[path] = vals.split()
prefer = ["1 stream,", "1 stream reverse", "8 streams", "WAN 1 stream,", "WAN 1 stream reverse", "new conn/s, server closes", "new conn/s, client closes", "keep-alive req/s", "p50", "p99 ", "p99.9", "KiB per idle", "switch →", "switch API", "switch command", "kill", "cluster takeover", "register", "KiB per registered", "gateway RSS", "ARP"]
order.sort(key=lambda f: next((i for i, p in enumerate(prefer) if f.startswith(p)), 99))
paths = ["direct", "haproxy", "vipmux-m1", "vipmux-m2"]
def med(v):
    nums = [float(x) for x in v if x != "none"]
    if not nums: return None, "none"
    m = statistics.median(nums)
    s = "%g" % m if len(nums) == 1 else "%g (%g–%g)" % (m, min(nums), max(nums))
    return m, s
lines = ["# vipmux benchmark", "",
         "commit %s, %s CPUs, %s run(s) of %s s each, median (min–max). Same run, same links, same servers. Ratios: median (min–max) of the per-round ratios. [pinned]: the proxy on CPU 1, clients and servers on CPU 0." % (commit, cpus, runs, t), "",
         *([] if status == "complete" else ["**Run %s.** The table holds the figures measured until then." % ("in progress" if status == "running" else status), ""]),
         "| figure | direct | haproxy | vipmux mode 1 | vipmux mode 2 | m1/haproxy | m1/direct |", "|---|---|---|---|---|---|---|"]
for fig in order:
    row = figs[fig]
    meds = {p: med(row[p]) if p in row else (None, "") for p in paths}
    def ratio(a, b):
        # Per round: vipmux and the reference were measured back to back,
        # so the ratio of each round is steadier than the ratio of medians.
        xs, ys = row.get(a, []), row.get(b, [])
        rs = [float(x) / float(y) for x, y in zip(xs, ys) if x != "none" and y != "none" and float(y)]
        if not rs: return ""
        m = statistics.median(rs)
        return "%.2f" % m if len(rs) == 1 else "%.2f (%.2f–%.2f)" % (m, min(rs), max(rs))
    lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (fig, *(meds[p][1] for p in paths), ratio("vipmux-m1", "haproxy"), ratio("vipmux-m1", "direct")))
lines += ["", "Reference for failover: keepalived's VRRP default needs 3 × advert_int = 3 s."]
if any(f.startswith("cluster takeover") for f in order):
    lines += ["", "Reference for the cluster takeover (two gateways on etcd, lease 1 s): keepalived default ~3.5 s; issue 13 target ≤ 1.5 s."]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
if final == "print":
    print(text)
    print("written to", out)
PY
}
STATUS=running
declare -A R    # R[figure|path] = "v1 v2 v3"
# A command that fails ends the run (set -e) but writes what was measured,
# says where, and keeps the gateway's log next to the table.
on_err() {
	local rc=$? line=$1
	log "bench: failed (exit $rc) at bench/run.sh:$line: $BASH_COMMAND"
	STATUS="INCOMPLETE: failed (exit $rc) at bench/run.sh:$line: ${BASH_COMMAND//\"/}"
	[ -z "${VPID:-}" ] || kill -0 "$VPID" 2>/dev/null || STATUS="$STATUS (vipmux serve was no longer running)"
	report print || true
	if [ -s "$tmp/vipmux.log" ]; then
		cp "$tmp/vipmux.log" "${out%.md}.vipmux.log"
		log "bench: gateway log kept in ${out%.md}.vipmux.log"
	fi
}
trap 'on_err $LINENO' ERR
add() { R["$1|$2"]="${R["$1|$2"]:-} $3"; }
# connection_shapes PATH SUFFIX: the per-connection and per-request
# figures of PATH, labelled with SUFFIX (" [pinned]" or nothing).
connection_shapes() {
	local p=$1 sfx=$2 ip=${TARGET[$1]} tag=${2:+-pinned}
	if want conns; then
		# HTTP with Connection: close: the server closes first.
		add "new conn/s, server closes$sfx" "$p" "$(prof "$p" "conns$tag" nsx $C $CPU0 "$LOADGEN" conns -addr "$ip:8080" -c 32 -d "${T}s" | jget per_sec | xargs printf '%.0f')"
		# A key-value client: connect, one command, close (50 at once).
		add "new conn/s, client closes$sfx" "$p" "$(prof "$p" "cconns$tag" nsx $C $CPU0 "$LOADGEN" conns -closer client -addr "$ip:8080" -c 50 -d "${T}s" | jget per_sec | xargs printf '%.0f')"
		# Small requests over 50 keep-alive connections, as fast as they go.
		add "keep-alive req/s, 50 conns$sfx" "$p" "$(prof "$p" "reqs$tag" nsx $C $CPU0 "$LOADGEN" reqs -addr "$ip:8080" -c 50 -d "${T}s" | jget per_sec | xargs printf '%.0f')"
	fi
	if want latency; then
		local lat
		lat=$(prof "$p" "latency$tag" nsx $C $CPU0 "$LOADGEN" rate -addr "$ip:8080" -c 16 -rate "$RATE" -d "${T}s")
		add "p50 µs @${RATE}/s$sfx" "$p" "$(echo "$lat" | jget p50_us)"
		add "p99 µs @${RATE}/s$sfx" "$p" "$(echo "$lat" | jget p99_us)"
		add "p99.9 µs @${RATE}/s$sfx" "$p" "$(echo "$lat" | jget p999_us)"
	fi
}
for run in $(seq "$RUNS"); do
	log "run $run/$RUNS"
	[ "$run" = 1 ] || report
	for p in "${PATHS[@]}"; do
		ip=${TARGET[$p]}
		if want throughput; then
			add "1 stream, Gbit/s" "$p" "$(prof "$p" 1stream iperf "$ip")"
			add "1 stream reverse, Gbit/s" "$p" "$(prof "$p" reverse iperf "$ip" -R)"
			add "8 streams, Gbit/s" "$p" "$(prof "$p" 8streams iperf "$ip" -P 8)"
		fi
		[ "$PIN" = 1 ] || connection_shapes "$p" ""
	done
	# Pinned: the A/B setting, for HAProxy and vipmux (the direct path has
	# no proxy to pin; mode 2 shares mode 1's data path).
	if [ "$PIN" != 0 ]; then
		pin 1
		for p in "${PATHS[@]}"; do
			case $p in haproxy|vipmux-m1) connection_shapes "$p" " [pinned]";; esac
		done
		pin 0
	fi
	want idle && for p in haproxy vipmux-m1; do
		pid=$HPID; [ "$p" = haproxy ] || pid=$VPID
		before=$(rss_kib "$pid")
		nsx $C "$LOADGEN" idle -addr "${TARGET[$p]}:8080" -n "$IDLE_N" -hold 30s >"$tmp/idle.json" 2>"$tmp/idle.err" &
		lg=$!
		for _ in $(seq 600); do grep -q holding "$tmp/idle.err" 2>/dev/null && break; sleep 0.1; done
		sleep 1
		after=$(rss_kib "$pid")
		kill "$lg" 2>/dev/null; wait "$lg" 2>/dev/null || true
		add "KiB per idle conn" "$p" "$(awk -v a="$after" -v b="$before" -v n="$IDLE_N" 'BEGIN {printf "%.1f", (a-b)/n}')"
	done
	want switch || continue
	# Manual switch → first new connection served by the new active: the
	# API switch goes to the standby, the CLI's back. (A health check that
	# timed out under the idle round may have failed web-a over already.)
	from=$(active_member 8080); to=web-b; [ "$from" = web-a ] || to=web-a
	nsx $C "$LOADGEN" follow -addr 198.18.0.100:8080 -want $to -d 5s >"$tmp/follow.json" &
	lg=$!; sleep 0.3
	nsx $G "$LOADGEN" switch -api http://127.0.0.1:7070 -port 8080 -want $to >"$tmp/switch.json"
	wait "$lg"
	add "switch → first new conn, ms" vipmux-m2 "$(python3 -c "import json; d=json.load(open('$tmp/follow.json')); s=json.load(open('$tmp/switch.json')); print('%.1f' % ((d['at_unix_ns']-s['sent_unix_ns'])/1e6))")"
	add "switch API answer (durable), ms" vipmux-m2 "$(jget ms <"$tmp/switch.json")"
	# The same through the CLI, whose process start is part of what an
	# operator waits for.
	t0=$(date +%s%N); vmx switch --port 8080 --to "$from"; t1=$(date +%s%N)
	add "switch command (CLI start to exit), ms" vipmux-m2 "$(( (t1 - t0) / 1000000 ))"
	sleep 1
done

# Syscalls and packets per connection (issue 14, lever 5), asked for by
# name only (ONLY=syscalls): strace -c on the proxy while 8 clients open,
# use and close connections for T seconds, then the same without strace
# for the front link's packet counters (both directions). The pinned
# HAProxy is the one-thread instance, so its figure is one process's.
if [[ ",$ONLY," == *",syscalls,"* ]]; then
	command -v strace >/dev/null || { log "bench: syscalls needs strace"; exit 1; }
	front_pkts() { # front_pkts NS DEV: rx+tx packets
		nsx "$1" cat "/sys/class/net/$2/statistics/rx_packets" "/sys/class/net/$2/statistics/tx_packets" | awk '{s+=$1} END {print s}'
	}
	for closer in server client; do
		for p in haproxy vipmux-m1; do
			pid=$HPID_PINNED ip=198.19.128.3 dev=h0
			[ "$p" = haproxy ] || { pid=$VPID ip=${TARGET[$p]} dev=f0; }
			strace -f -c -q -o "$tmp/strace.txt" -p "$pid" &
			st=$!; sleep 1
			done_n=$(nsx $C "$LOADGEN" conns -closer $closer -addr "$ip:8080" -c 8 -d "${T}s" | jget done)
			kill -INT "$st"; wait "$st" 2>/dev/null || true
			add "syscalls per conn, $closer closes" "$p" "$(awk -v n="$done_n" '$NF=="total" {printf "%.1f", $4/n}' "$tmp/strace.txt")"
			log "syscalls, $p, $closer closes ($done_n conns): $(awk -v n="$done_n" 'NR>2 && $1 ~ /^[0-9.]+$/ && $NF != "total" {printf "%s %.1f, ", $NF, $4/n}' "$tmp/strace.txt" | head -c 400)"
			before=$(front_pkts $G $dev)
			done_n=$(nsx $C "$LOADGEN" conns -closer $closer -addr "$ip:8080" -c 8 -d "${T}s" | jget done)
			after=$(front_pkts $G $dev)
			add "front packets per conn, $closer closes" "$p" "$(awk -v a="$after" -v b="$before" -v n="$done_n" 'BEGIN {printf "%.1f", (a-b)/n}')"
		done
	done
	report
fi

# WAN: clients across a delayed, lossy link (this kernel has no netem).
# A client namespace of its own reaches a second HAProxy and a second
# vipmux, each on a front link of its own, through bench/impair, which holds
# every frame WAN_DELAY and drops WAN_LOSS of them in each direction. The
# links between impair and the proxies carry no offloads (segments leave
# cut to the MTU, as on a WAN), for both proxies alike.
if want wan; then
	WAN_DELAY=${WAN_DELAY:-20ms} WAN_LOSS=${WAN_LOSS:-0.005}
	ip netns add $W; ip netns add $I
	for ns in $W $I; do nsx $ns ip link set lo up; done
	ip link add w0 netns $W type veth peer name iw0 netns $I
	ip link add w1 netns $W type veth peer name iw1 netns $I
	ip link add if1 netns $I type veth peer name f1 netns $G
	ip link add ih1 netns $I type veth peer name h1 netns $G
	for d in iw0 iw1 if1 ih1; do nsx $I sysctl -qw net.ipv6.conf.$d.disable_ipv6=1; nsx $I ip link set $d up; done
	nsx $W ip addr add 198.18.0.2/16 dev w0; nsx $W ip addr add 198.19.129.1/24 dev w1
	for d in w0 w1; do nsx $W ip link set $d up; nsx $W ethtool -K $d tx off tso off gso off >/dev/null; done
	nsx $G ip addr add 198.19.129.2/24 dev h1; nsx $G ip link set h1 up; nsx $G ip link set f1 up
	for d in f1 h1; do nsx $G ethtool -K $d tx off tso off gso off >/dev/null; done
	nsx $G ethtool -K h1 gro on >/dev/null
	sed -e 's/198\.19\.128\.2:/198.19.129.2:/' "$tmp/haproxy.cfg" >"$tmp/haproxy-wan.cfg"
	bg nsx $G haproxy -f "$tmp/haproxy-wan.cfg" -db
	sed -e 's/^interface = .*/interface = "f1"/' -e 's/7070/7071/' -e "s|$tmp/state.json|$tmp/wan-state.json|" "$tmp/vipmux.toml" >"$tmp/vipmux-wan.toml"
	ip netns exec $G env $VIPMUX_ENV "$BIN" serve --config "$tmp/vipmux-wan.toml" 2>"$tmp/vipmux-wan.log" &
	pids+=($!)
	for _ in $(seq 100); do nsx $G "$BIN" status --gateway http://127.0.0.1:7071 >/dev/null 2>&1 && break; sleep 0.1; done
	nsx $G "$BIN" register --gateway http://127.0.0.1:7071 --name web-a --ip 198.18.0.20 --backend 198.19.0.2 >/dev/null
	bg nsx $I "$IMPAIR" -a iw0 -b if1 -delay "$WAN_DELAY" -loss "$WAN_LOSS"
	bg nsx $I "$IMPAIR" -a iw1 -b ih1 -delay "$WAN_DELAY" -loss "$WAN_LOSS"
	for _ in $(seq 50); do nsx $W curl -s -m 1 -o /dev/null http://198.18.0.20:8080/ && break; sleep 0.1; done
	wan="$WAN_DELAY each way, $WAN_LOSS loss"
	# The gateway kernel's congestion control is HAProxy's; gVisor has reno
	# and cubic only. The reverse direction (the proxy sends across the
	# WAN) is measured again with the kernel on reno, the algorithm vipmux
	# runs, so that the table tells the algorithm from the implementation.
	host_cc=$(nsx $G sysctl -n net.ipv4.tcp_congestion_control)
	for run in $(seq "$RUNS"); do
		log "wan $run/$RUNS"
		for p in haproxy vipmux-m1; do
			ip=198.19.129.2; [ "$p" = haproxy ] || ip=198.18.0.20
			add "WAN 1 stream, Mbit/s ($wan)" "$p" "$(IPERF_NS=$W UNIT=M iperf "$ip")"
			add "WAN 1 stream reverse, Mbit/s ($wan; kernel: $host_cc)" "$p" "$(IPERF_NS=$W UNIT=M iperf "$ip" -R)"
			[ "$p" = haproxy ] && nsx $G sysctl -qw net.ipv4.tcp_congestion_control=reno
			add "WAN 1 stream reverse, Mbit/s ($wan; kernel: reno)" "$p" "$(IPERF_NS=$W UNIT=M iperf "$ip" -R)"
			nsx $G sysctl -qw net.ipv4.tcp_congestion_control="$host_cc"
		done
		report
	done
fi

# Automatic failover: kill -9 the active server; first new connection served
# by the standby. keepalived's VRRP default needs 3 × advert_int = 3 s.
if want failover; then
active=$(active_member 8080)
standby=web-b; victim=$A; [ "$active" = web-a ] || { standby=web-a; victim=$B; }
nsx $C "$LOADGEN" follow -addr 198.18.0.100:8080 -want $standby -d 10s >"$tmp/follow.json" 2>"$tmp/follow.err" &
lg=$!; sleep 0.3
t0=$(date +%s%N); for p in $(ip netns pids "$victim"); do grep -q namesrv /proc/$p/cmdline 2>/dev/null && kill -9 "$p" 2>/dev/null; done
if wait "$lg"; then
	add "kill -9 → first new conn, ms" vipmux-m2 "$(python3 -c "import json; d=json.load(open('$tmp/follow.json')); print('%.1f' % ((d['at_unix_ns']-$t0)/1e6))")"
else
	add "kill -9 → first new conn, ms" vipmux-m2 "none"; log "failover: $(cat "$tmp/follow.err")"
fi
# The killed server comes back, as it was: the groups after this one (the
# cluster's gateways proxy to web-a) find the topology as they would alone.
victim_name=web-a; [ "$victim" = "$A" ] || victim_name=web-b
bg nsx "$victim" "$NAMESRV" --name $victim_name --listen :8080
for _ in $(seq 50); do nsx "$victim" curl -s -m 1 -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.1; done
report
fi

# Scale: SCALE_N mode-1 IPs on the one NIC, registered in batches of 1000
# (POST /v1/register/batch, as `vipmux register --file` sends them); then
# SCALE_N more one request each, 8 at once, into a table that already
# holds SCALE_N (a change's cost must not grow with the table); then the
# ARP answer time of 1000 random IPs of the first range, timed by loadgen
# on the client's link (AF_PACKET: no dependence on which arping is
# installed).
if want scale; then
before=$(rss_kib "$VPID")
# A failed figure is reported as such; it must not lose the others.
reg=$(nsx $G "$LOADGEN" register -api http://127.0.0.1:7070 -n "$SCALE_N" -batch 1000 -c 1 -base 198.18.100.0 -backend 198.19.0.2) || reg='{"seconds": "nan"}'
after=$(rss_kib "$VPID")
add "register $SCALE_N IPs (batches of 1000), s" vipmux-m1 "$(echo "$reg" | jget seconds | xargs printf '%.2f')"
add "KiB per registered IP" vipmux-m1 "$(awk -v a="$after" -v b="$before" -v n="$SCALE_N" 'BEGIN {printf "%.2f", (a-b)/n}')"
# The per-IP figure is a difference of RSS after heavy traffic (the Go heap
# may still be giving memory back); the gateway's whole RSS bounds it.
add "gateway RSS with $SCALE_N IPs, MiB" vipmux-m1 "$(awk -v a="$after" 'BEGIN {printf "%.1f", a/1024}')"
reg=$(nsx $G "$LOADGEN" register -api http://127.0.0.1:7070 -n "$SCALE_N" -c 8 -base 198.18.160.0 -backend 198.19.0.2) || reg='{"seconds": "nan"}'
add "register $SCALE_N more IPs one at a time (8 at once), s" vipmux-m1 "$(echo "$reg" | jget seconds | xargs printf '%.2f')"
sleep 1 # the announcements of the new addresses (3 x 200 ms) end
arp=$(nsx $C "$LOADGEN" arp -iface c0 -base 198.18.100.0 -n "$SCALE_N" -count 1000) || arp='{"p50_us": "none", "p99_us": "none", "max_us": "none"}'
add "ARP answer p50 µs (1000 random IPs, $((2 * SCALE_N)) held)" vipmux-m1 "$(echo "$arp" | jget p50_us)"
add "ARP answer p99 µs (1000 random IPs, $((2 * SCALE_N)) held)" vipmux-m1 "$(echo "$arp" | jget p99_us)"
add "ARP answer max µs (1000 random IPs, $((2 * SCALE_N)) held)" vipmux-m1 "$(echo "$arp" | jget max_us)"
fi
# Cluster takeover (issue 13): two gateways sharing one table through etcd
# (Debian's etcd, heartbeat 50 ms, election 500 ms), [cluster] lease =
# "1s", and a client of their own, on one Linux bridge. Each round kills
# the holder of one IP with SIGKILL and times the first new connection
# served after it (by the other gateway: the holder is dead), then
# restarts the killed gateway, which joins again and takes nothing back.
#
#   client ns $KC: 198.18.0.1/16 on bridge cb, whose ports c0 and c1 lead
#                  to gw-a's f0 and gw-b's f1 (afpacket, no kernel IP)
#   gateway ns $KG: etcd on 127.0.0.1, gw-a (API :7080), gw-b (API :7081),
#                  k0 198.19.0.9 on the bench's back bridge (web-a 198.19.0.2)
if want cluster; then
	ip netns add $KC; ip netns add $KG
	for ns in $KC $KG; do nsx $ns ip link set lo up; done
	nsx $KC ip link add cb type bridge
	ip link add c0 netns $KC type veth peer name f0 netns $KG
	ip link add c1 netns $KC type veth peer name f1 netns $KG
	for d in c0 c1; do nsx $KC ip link set $d master cb; done
	# Frames as from a wire (full checksums) on every client-side device.
	for d in cb c0 c1; do nsx $KC ethtool -K $d tx off tso off gso off >/dev/null; nsx $KC ip link set $d up; done
	nsx $KC ip addr add 198.18.0.1/16 dev cb
	for d in f0 f1; do
		nsx $KG sysctl -qw net.ipv4.conf.$d.arp_ignore=8 net.ipv6.conf.$d.disable_ipv6=1
		nsx $KG ip link set $d up
	done
	ip link add k0 netns $KG type veth peer name pk netns $G
	nsx $G ip link set pk master br0 up
	nsx $KG ip addr add 198.19.0.9/24 dev k0; nsx $KG ip link set k0 up
	bg nsx $KG "$ETCD" --name bench --data-dir "$tmp/etcd" \
		--listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
		--listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
		--initial-cluster bench=http://127.0.0.1:23800 \
		--heartbeat-interval 50 --election-timeout 500 --log-level error >"$tmp/etcd.log" 2>&1
	declare -A CLDEV=([gw-a]=f0 [gw-b]=f1) CLAPI=([gw-a]=http://127.0.0.1:7080 [gw-b]=http://127.0.0.1:7081) CLPID=()
	for node in gw-a gw-b; do
		cat >"$tmp/cl-$node.toml" <<TOML
[nic]
driver = "afpacket"
interface = "${CLDEV[$node]}"
networks = ["198.18.0.0/16"]
[control]
listen = "${CLAPI[$node]#http://}"
[state]
path = "$tmp/cl-$node-state.json"
[log]
level = "warn"
[cluster]
etcd = ["http://127.0.0.1:23790"]
node = "$node"
lease = "1s"
TOML
	done
	# cl_start NODE: start NODE's gateway; its pid (ip netns exec execs
	# vipmux) is the one kill -9 hits.
	cl_start() {
		ip netns exec $KG "$BIN" serve --config "$tmp/cl-$1.toml" 2>>"$tmp/cl-$1.log" &
		CLPID[$1]=$!
		pids+=($!)
	}
	# cl_nodes NODE: how many gateways NODE's cluster status lists.
	cl_nodes() { nsx $KG "$BIN" cluster status --gateway "${CLAPI[$1]}" --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))' 2>/dev/null || echo 0; }
	# cl_holder NODE IP: the holder of IP as NODE's status shows it.
	cl_holder() { nsx $KG "$BIN" status --gateway "${CLAPI[$1]}" --json 2>/dev/null | python3 -c 'import json,sys
print(next((b.get("holder") or "" for b in json.load(sys.stdin)["bindings"] if b["ip"]=="'"$2"'"), ""))' 2>/dev/null || true; }
	cl_wait() { # cl_wait DESCRIPTION COMMAND...: up to 20 s for COMMAND to succeed
		local what=$1; shift
		for _ in $(seq 200); do "$@" && return 0; sleep 0.1; done
		log "bench: cluster: $what not within 20 s"; return 1
	}
	cl_start gw-a; cl_start gw-b
	cl_wait "both gateways in gw-a's cluster status" eval '[ "$(cl_nodes gw-a)" = 2 ]'
	CLVIP=198.18.0.30
	nsx $KG "$BIN" register --gateway "${CLAPI[gw-a]}" --name web-a --ip $CLVIP --backend 198.19.0.2 >/dev/null
	for run in $(seq "$RUNS"); do
		log "cluster $run/$RUNS"
		cl_wait "a holder of $CLVIP" eval 'h=$(cl_holder gw-a $CLVIP); [ "$h" = gw-a ] || { h=$(cl_holder gw-b $CLVIP); [ "$h" = gw-b ]; }'
		holder=$h other=gw-a; [ "$holder" = gw-b ] || other=gw-b
		# Served by the holder, and the client's neighbour entry on its MAC.
		cl_wait "$CLVIP served by $holder" nsx $KC curl -s -m 1 -o /dev/null http://$CLVIP:8080/
		# loadgen starts right after the kill: every connection it makes
		# is made after it (its start-up, milliseconds, is inside the
		# figure, which a lease of 1 s dominates).
		t0=$(date +%s%N)
		kill -9 "${CLPID[$holder]}"
		if nsx $KC "$LOADGEN" follow -addr $CLVIP:8080 -every 10ms -d 15s >"$tmp/cl-follow.json" 2>"$tmp/cl-follow.err"; then
			add "cluster takeover: kill -9 → first new conn, ms (lease 1 s)" vipmux-m1 "$(python3 -c "import json; d=json.load(open('$tmp/cl-follow.json')); print('%.1f' % ((d['at_unix_ns']-$t0)/1e6))")"
			log "cluster: $holder killed, $CLVIP served again after $(python3 -c "import json; d=json.load(open('$tmp/cl-follow.json')); print('%.0f ms, %d attempts failed' % ((d['at_unix_ns']-$t0)/1e6, d['failed']))")"
		else
			add "cluster takeover: kill -9 → first new conn, ms (lease 1 s)" vipmux-m1 "none"; log "cluster: $(cat "$tmp/cl-follow.err")"
		fi
		wait "${CLPID[$holder]}" 2>/dev/null || true
		report
		[ "$run" = "$RUNS" ] && break
		# The killed gateway comes back for the next round (it holds
		# nothing: the IP stays with $other).
		cl_start "$holder"
		cl_wait "$holder back in $other's cluster status" eval '[ "$(cl_nodes '"$other"')" = 2 ]'
	done
	# The gateways leave while etcd still runs (a gateway's Close revokes
	# its lease), so that cleanup does not have to kill them.
	for node in gw-a gw-b; do kill "${CLPID[$node]}" 2>/dev/null || true; done
	for node in gw-a gw-b; do
		for _ in $(seq 50); do kill -0 "${CLPID[$node]}" 2>/dev/null || break; sleep 0.1; done
		wait "${CLPID[$node]}" 2>/dev/null || true
	done
fi
STATUS=complete
report print
# The gateway's warnings (health checks that failed a member over under
# load, say) belong with the figures.
if [ -s "$tmp/vipmux.log" ]; then
	cp "$tmp/vipmux.log" "${out%.md}.vipmux.log"
	log "bench: gateway log (warnings) in ${out%.md}.vipmux.log"
fi

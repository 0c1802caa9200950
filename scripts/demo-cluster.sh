#!/usr/bin/env bash
# vipmux cluster demo (make demo-cluster): two gateways that back each other
# up through etcd, on a throw-away topology in network namespaces
# (198.18.0.0/15 only). docs/cluster.md explains what it shows.
#
#   client 198.18.0.1 ──┐
#   gw-a front (MAC A) ─┤ lan: one Linux bridge, the front LAN
#   gw-b front (MAC B) ─┘
#   gw-a 198.19.0.11 ───┐
#   gw-b 198.19.0.12 ───┤ back: a second bridge
#   etcd 198.19.0.254 ──┤   (Debian's etcd, heartbeat 50 ms, election 500 ms)
#   web-a .2, web-b .3 ─┘
#
# Both gateways run with [cluster] lease = "1s". The demo registers six
# IPs through gw-a, shows who holds each, then kills the holder of one IP
# with SIGKILL while the client keeps connecting, and says how long the
# other gateway took to serve it. It checks what it says (gratuitous ARP
# seen, table intact) and exits non-zero otherwise. Everything is removed
# on exit, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/netns.sh # teardown_netns, say, note, nsx
BIN=${BIN:-bin/vipmux}
NAMESRV=${NAMESRV:-bin/namesrv}
ETCD=${ETCD:-$(command -v etcd || true)}
[ "$(id -u)" = 0 ] || { echo "demo-cluster: run as root (it creates network namespaces)"; exit 1; }
[ -x "$BIN" ] && [ -x "$NAMESRV" ] || { echo "demo-cluster: build first: make build"; exit 1; }
[ -n "$ETCD" ] || { echo "demo-cluster: etcd not found (Debian package etcd-server; make deps installs it)"; exit 1; }
for t in tcpdump curl; do command -v $t >/dev/null || { echo "demo-cluster: $t not found (make deps installs it)"; exit 1; }; done

id=$(printf '%04x' $((RANDOM)))
P=vmxk$id
CLI=$P-cli SW=$P-sw EC=$P-etcd
declare -A GW=([gw-a]=$P-gw-a [gw-b]=$P-gw-b)
declare -A BACK=([gw-a]=198.19.0.11 [gw-b]=198.19.0.12)
SRVS=(web-a web-b)
NSS=("$CLI" "$SW" "$EC" "${GW[gw-a]}" "${GW[gw-b]}" "${SRVS[@]/#/$P-}")
tmp=$(mktemp -d /tmp/vipmux-demo-cluster.XXXXXX)

# cleanup ends every process that runs in the demo's namespaces, then the
# namespaces (teardown_netns, scripts/netns.sh).
cleanup() {
	set +e
	teardown_netns "${NSS[@]}"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { printf '\n   demo-cluster: %s\n' "$*" >&2; exit 1; }
vmx()  { local node=$1; shift; nsx "${GW[$node]}" "$BIN" "$@"; } # vmx NODE args: the CLI against NODE's API
# holder IP [NODE]: the gateway that holds IP as NODE's status shows it
# (its HOLDER column, the last one), or nothing.
holder() {
	vmx "${2:-gw-a}" status 2>/dev/null | awk -v ip="$1" '$1 == ip && $NF ~ /^gw-[ab]$/ {print $NF; exit}' || true
}
# bindings NODE: how many bindings NODE's status lists (mode 1 here: one
# line each).
bindings() { vmx "$1" status | awk '$1 ~ /^198\.18\.[0-9.]+$/' | wc -l; }
# nodes NODE: how many gateways NODE's cluster status lists.
nodes() { { vmx "$1" cluster status 2>/dev/null || true; } | tail -n +2 | wc -l; }
# named: replace each gateway's MAC with "MAC (gw-x)" on stdin.
named() { sed -e "s/${MAC[gw-a]}/${MAC[gw-a]} (gw-a)/I" -e "s/${MAC[gw-b]}/${MAC[gw-b]} (gw-b)/I"; }
ask() { # ask IP: one request from the client, answered by which server?
	local out
	if out=$(nsx "$CLI" curl -sS --max-time 2 "http://$1:8080/" 2>&1); then
		printf '   client → %-13s answered by %s\n' "$1" "$out"
	else
		printf '   client → %-13s failed: %s\n' "$1" "${out#curl: }"
		return 1
	fi
}

say "Building the topology (namespaces $P-*)"
for ns in "${NSS[@]}"; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done
nsx "$SW" ip link add lan type bridge
nsx "$SW" ip link add back type bridge
nsx "$SW" ip link set lan up
nsx "$SW" ip link set back up
# port NS DEV ADDR BRIDGE SWPORT: a veth from NS (DEV, ADDR or none) to a
# port of BRIDGE in the switch namespace.
port() {
	ip link add "$2" netns "$1" type veth peer name "$5" netns "$SW"
	nsx "$SW" ip link set "$5" master "$4" up
	[ "$3" = none ] || nsx "$1" ip addr add "$3" dev "$2"
	nsx "$1" ip link set "$2" up
}
port "$CLI" c0 198.18.0.1/24 lan l-cli
# Frames as from a wire: full checksums (see README, "Checksums").
nsx "$CLI" ethtool -K c0 tx off tso off gso off >/dev/null
port "$EC" b0 198.19.0.254/24 back b-etcd
i=2
for s in "${SRVS[@]}"; do
	port "$P-$s" b0 "198.19.0.$i/24" back "b-$s"
	nsx "$P-$s" "$NAMESRV" --name "$s" --listen :8080 >"$tmp/$s.log" 2>&1 &
	note "server computer $s at 198.19.0.$i, its application on port 8080"
	i=$((i + 1))
done
declare -A MAC
for node in gw-a gw-b; do
	ns=${GW[$node]}
	ip link add f0 netns "$ns" type veth peer name "l-$node" netns "$SW"
	nsx "$SW" ip link set "l-$node" master lan up
	# The gateway's kernel stays out of the front link: no IP, no ARP
	# answers, no IPv6.
	nsx "$ns" sysctl -qw net.ipv4.conf.f0.arp_ignore=8 net.ipv6.conf.f0.disable_ipv6=1
	nsx "$ns" ip link set f0 up
	port "$ns" b0 "${BACK[$node]}/24" back "b-$node"
	MAC[$node]=$(nsx "$ns" cat /sys/class/net/f0/address)
done

say "Starting etcd on the back network (198.19.0.254:2379; heartbeat 50 ms, election 500 ms)"
ip netns exec "$EC" "$ETCD" --name demo --data-dir "$tmp/etcd" \
	--listen-client-urls http://198.19.0.254:2379 --advertise-client-urls http://198.19.0.254:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster demo=http://127.0.0.1:2380 \
	--heartbeat-interval 50 --election-timeout 500 --log-level error >"$tmp/etcd.log" 2>&1 &

declare -A PID
for node in gw-a gw-b; do
	cat >"$tmp/$node.toml" <<TOML
[nic]
driver = "afpacket"
interface = "f0"
networks = ["198.18.0.0/24"]
[control]
listen = "127.0.0.1:7070"
# Not the table (that is etcd's), but serve locks it: one per gateway.
[state]
path = "$tmp/$node-state.json"
[cluster]
etcd = ["http://198.19.0.254:2379"]
node = "$node"
lease = "1s"
TOML
	# Started directly (not through nsx): $! is then vipmux's own pid,
	# the one kill -9 hits below.
	# Disowned: bash would otherwise report the kill below as "Killed"
	# (cleanup finds the gateways through their namespaces).
	ip netns exec "${GW[$node]}" "$BIN" serve --config "$tmp/$node.toml" >"$tmp/$node.log" 2>&1 &
	PID[$node]=$!
	disown "$!"
done
say "Starting two gateways, gw-a (MAC ${MAC[gw-a]}) and gw-b (MAC ${MAC[gw-b]}): [cluster] lease = \"1s\""
for node in gw-a gw-b; do sed -n '/^\[cluster\]/,$p' "$tmp/$node.toml" | sed "s/^/   $node.toml: /"; done
for _ in $(seq 100); do
	[ "$(nodes gw-a)" = 2 ] && [ "$(nodes gw-b)" = 2 ] && break
	sleep 0.1
done
[ "$(nodes gw-a)" = 2 ] || { cat "$tmp/gw-a.log" "$tmp/gw-b.log"; fail "the two gateways did not both join within 10 s"; }
note "\$ vipmux cluster status"
vmx gw-a cluster status | sed 's/^/   /'

VIPS=(198.18.0.10 198.18.0.11 198.18.0.12 198.18.0.13 198.18.0.14 198.18.0.15)
say "Registering ${#VIPS[@]} IPs through gw-a: one table, in etcd"
i=0
for ip in "${VIPS[@]}"; do
	s=${SRVS[$((i % 2))]}
	note "\$ vipmux register --name $s --ip $ip --backend 198.19.0.$((i % 2 + 2))   (sent to gw-a)"
	vmx gw-a register --name "$s" --ip "$ip" --backend "198.19.0.$((i % 2 + 2))" >/dev/null
	i=$((i + 1))
done
for ip in "${VIPS[@]}"; do
	for _ in $(seq 100); do [ -n "$(holder "$ip" gw-b)" ] && break; sleep 0.1; done
	[ -n "$(holder "$ip" gw-b)" ] || fail "no gateway holds $ip 10 s after its registration"
done
for ip in "${VIPS[@]}"; do ask "$ip" || fail "$ip is not served"; done
note "Each IP is held (answered for with ARP) by one gateway, spread by rendezvous hashing."
note "gw-b's table, which gw-a wrote, with the HOLDER column (\$ vipmux status, sent to gw-b):"
vmx gw-b status | sed 's/^/   /'
before=$(bindings gw-b)
note "\$ vipmux cluster status   (HELD: how many IPs each gateway holds)"
vmx gw-b cluster status | sed 's/^/   /'
say "ARP: the client's neighbour table, with the MAC of each IP's holder"
nsx "$CLI" ip neigh show dev c0 | named | sed 's/^/   /'

VIP=${VIPS[0]}
VICTIM=$(holder "$VIP")
case $VICTIM in gw-a) OTHER=gw-b ;; gw-b) OTHER=gw-a ;; *) fail "no holder of $VIP: '$VICTIM'" ;; esac
held=""
for ip in "${VIPS[@]}"; do [ "$(holder "$ip")" != "$VICTIM" ] || held="$held $ip"; done
say "kill -9 of $VICTIM, the holder of $VIP (it holds$held), while the client keeps connecting"
ip netns exec "$CLI" tcpdump -i c0 -n -e -l -tt arp >"$tmp/arp.txt" 2>"$tmp/tcpdump.err" &
TPID=$!
for _ in $(seq 50); do grep -q "listening on" "$tmp/tcpdump.err" && break; sleep 0.1; done
note "\$ kill -9 ${PID[$VICTIM]}   ($VICTIM's vipmux serve)"
failed=0
t0=$(date +%s%N)
kill -9 "${PID[$VICTIM]}"
# One connection at a time, 20 ms apart, each given 100 ms to connect (a
# SYN sent to the dead gateway's MAC is lost): any that is served now is
# served by $OTHER.
while ! out=$(nsx "$CLI" curl -sS --connect-timeout 0.1 --max-time 1 "http://$VIP:8080/" 2>/dev/null); do
	failed=$((failed + 1))
	sleep 0.02
	[ $(($(date +%s%N) - t0)) -lt 20000000000 ] || fail "$OTHER does not serve $VIP 20 s after $VICTIM was killed"
done
t1=$(date +%s%N)
gap_ms=$(((t1 - t0) / 1000000))
sleep 0.5 # the capture sees the announcements' last frames
kill "$TPID" 2>/dev/null || true
wait "$TPID" 2>/dev/null || true

say "Takeover"
note "$OTHER served $VIP $(printf '%d.%03d' $((gap_ms / 1000)) $((gap_ms % 1000))) s after $VICTIM was killed (the connection reached $out)."
note "Meanwhile $failed connection attempts failed (one every 20 ms, each given 100 ms to connect). The time is"
note "the lease (1 s), up to 0.5 s of etcd's expiry check, and the 2 x 100 ms probe"
note "that the address is really free before $OTHER answers for it."
garp=$(grep -i "${MAC[$OTHER]}" "$tmp/arp.txt" | grep "Request who-has $VIP tell $VIP" || true)
[ -n "$garp" ] || { sed 's/^/   /' "$tmp/arp.txt"; fail "no gratuitous ARP from $OTHER for $VIP in the capture above"; }
note "$OTHER sent gratuitous ARP for $VIP as soon as it held it (a capture on the client's"
note "link; the time is since the kill):"
echo "$garp" | head -3 | named | awk -v t0="$t0" '{ t = $1; $1 = ""; printf "     +%.3f s %s\n", t - t0 / 1e9, $0 }'
note "so the client's neighbour table now points $VIP at $OTHER:"
nsx "$CLI" ip neigh show "$VIP" dev c0 | named | sed 's/^/     /'

say "The table is intact: $OTHER holds every IP (\$ vipmux status, sent to $OTHER)"
vmx "$OTHER" status | sed 's/^/   /'
after=$(bindings "$OTHER")
[ "$after" = "$before" ] || fail "$OTHER's table has $after bindings, it had $before before the kill"
for ip in "${VIPS[@]}"; do
	for _ in $(seq 50); do [ "$(holder "$ip" "$OTHER")" = "$OTHER" ] && break; sleep 0.1; done
	[ "$(holder "$ip" "$OTHER")" = "$OTHER" ] || fail "$ip is held by '$(holder "$ip" "$OTHER")', not $OTHER"
	ask "$ip" || fail "$ip is not served after the takeover"
done
note "\$ vipmux cluster status   ($VICTIM's lease ended with it)"
vmx "$OTHER" cluster status | sed 's/^/   /'
note "All $after bindings are there, all served by $OTHER. Restarted, $VICTIM would join"
note "again and take nothing back (addresses are sticky; see vipmux cluster rebalance)."
say "Done: removing the namespaces"

#!/usr/bin/env bash
# vipmux demo: a throw-away topology in network namespaces (198.18.0.0/15
# only), the real gateway, three kernel servers and a kernel client.
#
#   client ns ── veth ──[ f0: vipmux (gVisor), one MAC ]   gateway ns
#   198.18.0.1                                    │ br0 198.19.0.1
#                                      web-a 198.19.0.2, web-b .3, web-c .4
#
# Everything is removed on exit, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/netns.sh # teardown_netns, say, note, nsx
BIN=${BIN:-bin/vipmux}
NAMESRV=${NAMESRV:-bin/namesrv}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)"; exit 1; }
[ -x "$BIN" ] && [ -x "$NAMESRV" ] || { echo "demo: build first: make build"; exit 1; }

id=$(printf '%04x' $((RANDOM)))
CLI=vmxd$id-cli GW=vmxd$id-gw
SRVS=(web-a web-b web-c)
tmp=$(mktemp -d /tmp/vipmux-demo.XXXXXX)
pids=()

# cleanup ends every process that runs in the demo's namespaces, then the
# namespaces (teardown_netns, scripts/netns.sh).
cleanup() {
	set +e
	local nss=("$CLI" "$GW" "${SRVS[@]/#/vmxd$id-}")
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	teardown_netns "${nss[@]}"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

vmx()  { nsx "$GW" "$BIN" "$@"; }
ask()  { # ask URL: one request from the client, answered by which server?
	local out
	if out=$(nsx "$CLI" curl -sS --max-time 2 "$1" 2>&1); then
		printf '   client → %-28s answered by %s\n' "$1" "$out"
	else
		printf '   client → %-28s failed: %s\n' "$1" "${out#curl: }"
	fi
}

say "Building the topology (namespaces $CLI, $GW, ${SRVS[*]/#/vmxd$id-})"
ip netns add "$CLI"; ip netns add "$GW"
ip link add c0 netns "$CLI" type veth peer name f0 netns "$GW"
nsx "$CLI" ip link set lo up
nsx "$CLI" ip addr add 198.18.0.1/24 dev c0
nsx "$CLI" ip link set c0 up
# Frames as from a wire: full checksums (see README, "Checksums").
nsx "$CLI" ethtool -K c0 tx off tso off gso off >/dev/null
nsx "$GW" ip link set lo up
nsx "$GW" ip link add br0 type bridge
nsx "$GW" ip addr add 198.19.0.1/24 dev br0
nsx "$GW" ip link set br0 up
i=2
for s in "${SRVS[@]}"; do
	ns=vmxd$id-$s
	ip netns add "$ns"
	ip link add e0 netns "$ns" type veth peer name "p$i" netns "$GW"
	nsx "$GW" ip link set "p$i" master br0 up
	nsx "$ns" ip link set lo up
	nsx "$ns" ip addr add "198.19.0.$i/24" dev e0
	nsx "$ns" ip link set e0 up
	nsx "$ns" "$NAMESRV" --name "$s" --listen :8080 >"$tmp/$s.log" 2>&1 &
	pids+=($!)
	note "server computer $s at 198.19.0.$i, its application on port 8080"
	i=$((i + 1))
done

cat >"$tmp/vipmux.toml" <<TOML
[nic]
driver = "afpacket"
interface = "f0"
networks = ["198.18.0.0/24"]
[shared]
address = "198.18.0.100"
[control]
listen = "127.0.0.1:7070"
[state]
path = "$tmp/state.json"
TOML
say "Starting the gateway: vipmux serve (front NIC f0, no kernel IP on it)"
nsx "$GW" "$BIN" serve --config "$tmp/vipmux.toml" >"$tmp/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do vmx status >/dev/null 2>&1 && break; sleep 0.1; done
vmx status >/dev/null || { cat "$tmp/gateway.log"; exit 1; }
MAC=$(nsx "$GW" cat /sys/class/net/f0/address)
note "the gateway's one MAC: $MAC"

say "Mode 1: each server computer registers its own IP"
i=10
for s in "${SRVS[@]}"; do
	be=198.19.0.$((i - 8))
	note "\$ vipmux register --name $s --ip 198.18.0.$i --backend $be"
	vmx register --name "$s" --ip "198.18.0.$i" --backend "$be" >/dev/null
	i=$((i + 1))
done
for ip in 198.18.0.10 198.18.0.11 198.18.0.12 198.18.0.10; do ask "http://$ip:8080/"; done
say "ARP: the client's neighbour table holds every IP at the gateway's one MAC"
nsx "$CLI" ip neigh show dev c0 | sed 's/^/   /'
ask "http://198.18.0.13:8080/"
note "198.18.0.13 is registered by nobody: no ARP answer, no connection:"
nsx "$CLI" ip neigh show 198.18.0.13 dev c0 | sed 's/^/   /'

say "Deregister web-b: its IP goes away, the others carry on"
note "\$ vipmux deregister --name web-b --ip 198.18.0.11"
vmx deregister --name web-b --ip 198.18.0.11 >/dev/null
nsx "$CLI" ip neigh flush dev c0
for ip in 198.18.0.10 198.18.0.11 198.18.0.12; do ask "http://$ip:8080/"; done

say "Mode 2: one shared IP (198.18.0.100), port 8080: web-a active, web-c standby"
note "\$ vipmux register --name web-a --port 8080 --backend 198.19.0.2:8080 --state active"
vmx register --name web-a --port 8080 --backend 198.19.0.2:8080 --state active >/dev/null
note "\$ vipmux register --name web-c --port 8080 --backend 198.19.0.4:8080   (standby)"
vmx register --name web-c --port 8080 --backend 198.19.0.4:8080 >/dev/null
for _ in 1 2 3; do ask "http://198.18.0.100:8080/"; done
say "Switch: web-c becomes active; later connections follow"
note "\$ vipmux switch --port 8080 --to web-c"
vmx switch --port 8080 --to web-c >/dev/null
for _ in 1 2 3; do ask "http://198.18.0.100:8080/"; done

say "The table (vipmux status)"
vmx status | sed 's/^/   /'
say "Done: removing the namespaces"

# scripts/netns.sh: what the demos share (sourced by demo.sh and
# demo-cluster.sh, never run).

# teardown_netns NS...: ends every process that runs in the namespaces
# (what `ip netns pids` names: a backgrounded "ip netns exec ..." or
# function's $! is a subshell's pid, and killing only that once left the
# servers and the gateway running without their links), SIGKILL after
# 3 s, then deletes the namespaces.
teardown_netns() {
	local ns left
	for ns in "$@"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null; done
	for _ in $(seq 30); do
		left=$(for ns in "$@"; do ip netns pids "$ns" 2>/dev/null; done)
		[ -z "$left" ] && break
		sleep 0.1
	done
	[ -z "$left" ] || echo "$left" | xargs -r kill -9 2>/dev/null
	wait 2>/dev/null
	for ns in "$@"; do ip netns del "$ns" 2>/dev/null; done
}

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }
nsx()  { local ns=$1; shift; ip netns exec "$ns" "$@"; }

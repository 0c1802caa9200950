package cluster

import (
	"cmp"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// holderRec is one holder key: the node holding an address and the lease
// the key is attached to.
type holderRec struct {
	node  string
	lease int64
}

// view is a gateway's copy of the cluster keys in etcd: the live nodes
// and the holders, kept by listing and then watching.
type view struct {
	prefix string

	// mu guards the following fields: the session's goroutine writes,
	// Holder reads.
	mu      sync.RWMutex
	nodes   map[string]Node
	holders map[netip.Addr]holderRec
}

func newView(prefix string) *view {
	return &view{prefix: prefix, nodes: map[string]Node{}, holders: map[netip.Addr]holderRec{}}
}

func (v *view) nodesPrefix() string   { return v.prefix + "cluster/nodes/" }
func (v *view) holdersPrefix() string { return v.prefix + "cluster/holders/" }
func (v *view) rebalanceKey() string  { return v.prefix + "cluster/rebalance" }

// put applies a key's new value.
func (v *view) put(kv *mvccpb.KeyValue) {
	v.mu.Lock()
	defer v.mu.Unlock()
	key := string(kv.Key)
	switch {
	case strings.HasPrefix(key, v.nodesPrefix()):
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return // not ours to judge; a node key we cannot read is no node
		}
		n.Name = strings.TrimPrefix(key, v.nodesPrefix())
		n.Lease = kv.Lease
		v.nodes[n.Name] = n
	case strings.HasPrefix(key, v.holdersPrefix()):
		ip, err := netip.ParseAddr(strings.TrimPrefix(key, v.holdersPrefix()))
		if err != nil {
			return
		}
		v.holders[ip] = holderRec{node: string(kv.Value), lease: kv.Lease}
	}
}

// del applies a key's deletion.
func (v *view) del(key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case strings.HasPrefix(key, v.nodesPrefix()):
		delete(v.nodes, strings.TrimPrefix(key, v.nodesPrefix()))
	case strings.HasPrefix(key, v.holdersPrefix()):
		if ip, err := netip.ParseAddr(strings.TrimPrefix(key, v.holdersPrefix())); err == nil {
			delete(v.holders, ip)
		}
	}
}

// holder returns the node holding ip.
func (v *view) holder(ip netip.Addr) (string, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	h, ok := v.holders[ip]
	return h.node, ok
}

// liveNodes returns the nodes, sorted by name.
func (v *view) liveNodes() []Node {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]Node, 0, len(v.nodes))
	for _, n := range v.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// heldBy returns the addresses whose holder key is attached to lease.
func (v *view) heldBy(lease int64) map[netip.Addr]struct{} {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[netip.Addr]struct{}{}
	for ip, h := range v.holders {
		if h.lease == lease {
			out[ip] = struct{}{}
		}
	}
	return out
}

// unheld returns the addresses of table that have no holder.
func (v *view) unheld(table map[netip.Addr]struct{}) []netip.Addr {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []netip.Addr
	for ip := range table {
		if _, ok := v.holders[ip]; !ok {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

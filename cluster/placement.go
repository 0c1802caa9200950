package cluster

import (
	"cmp"
	"hash/fnv"
	"math"
	"net/netip"
	"slices"
)

// Placements.
const (
	// PlacementSpread spreads the addresses over the live gateways by
	// weighted rendezvous hashing.
	PlacementSpread = "spread"
	// PlacementPriority gives every address to the live gateway with the
	// highest priority (ties: the lowest node name).
	PlacementPriority = "priority"
)

// Node is one live gateway as it announces itself in etcd (its node key,
// attached to its lease).
type Node struct {
	// Name is the gateway's unique name ([cluster] node).
	Name string `json:"node"`
	// MAC is its front NIC's MAC address.
	MAC string `json:"mac,omitempty"`
	// Control is its control API address.
	Control string `json:"control,omitempty"`
	// Priority is its priority for placement = "priority".
	Priority int `json:"priority"`
	// Weight is its share for placement = "spread" (a gateway of weight 2
	// gets twice the addresses of one of weight 1).
	Weight float64 `json:"weight,omitempty"`
	// Lease is the ID of its etcd lease.
	Lease int64 `json:"-"`
}

// score is node n's rendezvous score for ip: -w/ln(u), u uniform in (0,1)
// from a hash of ip and the name. The node with the highest score holds
// ip; when a node leaves, only its addresses move, each to the node with
// the next highest score for it.
func score(ip netip.Addr, n Node) float64 {
	h := fnv.New64a()
	b, _ := ip.MarshalBinary()
	h.Write(b)
	h.Write([]byte{0})
	h.Write([]byte(n.Name))
	x := h.Sum64()
	// A finalizer (splitmix64's) spreads FNV's low-entropy high bits.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	u := (float64(x>>11) + 0.5) / (1 << 53)
	w := n.Weight
	if w <= 0 {
		w = 1
	}
	return -w / math.Log(u)
}

// rank orders nodes for ip, the preferred holder first: by rendezvous score
// for spread, by priority for priority; ties by name.
func rank(ip netip.Addr, nodes []Node, placement string) []Node {
	out := slices.Clone(nodes)
	if placement == PlacementPriority {
		slices.SortFunc(out, func(a, b Node) int {
			if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
				return c
			}
			return cmp.Compare(a.Name, b.Name)
		})
		return out
	}
	scores := make(map[string]float64, len(out))
	for _, n := range out {
		scores[n.Name] = score(ip, n)
	}
	slices.SortFunc(out, func(a, b Node) int {
		if c := cmp.Compare(scores[b.Name], scores[a.Name]); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}

// position returns where name stands in ip's ranking of nodes (0: the
// preferred holder), or -1 when name is not among them.
func position(ip netip.Addr, nodes []Node, placement, name string) int {
	return slices.IndexFunc(rank(ip, nodes, placement), func(n Node) bool { return n.Name == name })
}

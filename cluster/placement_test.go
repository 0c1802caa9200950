package cluster_test

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/cluster"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func addrs(n int) []netip.Addr {
	var out []netip.Addr
	a := netip.MustParseAddr("198.18.2.1")
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

func preferred(ip netip.Addr, nodes []cluster.Node, placement string) string {
	return cluster.Rank(ip, nodes, placement)[0].Name
}

// TestRendezvous checks weighted rendezvous placement: addresses spread
// over the nodes in proportion to their weight, and a node that leaves
// moves only its own addresses.
func TestRendezvous(t *testing.T) {
	ips := addrs(600)
	three := []cluster.Node{{Name: "gw-a"}, {Name: "gw-b"}, {Name: "gw-c"}}
	count := map[string]int{}
	for _, ip := range ips {
		count[preferred(ip, three, cluster.PlacementSpread)]++
	}
	for _, n := range three {
		// 200 expected each; a hash that spread badly would miss by far.
		if c := count[n.Name]; c < 150 || c > 250 {
			t.Errorf("%s preferred for %d of 600 addresses, want about 200", n.Name, c)
		}
	}
	two := three[:2]
	for _, ip := range ips {
		before, after := preferred(ip, three, cluster.PlacementSpread), preferred(ip, two, cluster.PlacementSpread)
		if before != "gw-c" && before != after {
			t.Errorf("%v moved from %s to %s when gw-c left", ip, before, after)
		}
	}
	weighted := []cluster.Node{{Name: "gw-a", Weight: 3}, {Name: "gw-b", Weight: 1}}
	count = map[string]int{}
	for _, ip := range ips {
		count[preferred(ip, weighted, cluster.PlacementSpread)]++
	}
	if count["gw-a"] < 2*count["gw-b"] {
		t.Errorf("weight 3 vs 1: gw-a preferred for %d, gw-b for %d; want about 3:1", count["gw-a"], count["gw-b"])
	}
}

func TestPriority(t *testing.T) {
	tests := []struct {
		name  string
		nodes []cluster.Node
		want  []string
	}{
		{"highest first", []cluster.Node{{Name: "gw-a", Priority: 50}, {Name: "gw-b", Priority: 100}, {Name: "gw-c", Priority: 75}}, []string{"gw-b", "gw-c", "gw-a"}},
		{"ties by name", []cluster.Node{{Name: "gw-b", Priority: 100}, {Name: "gw-a", Priority: 100}}, []string{"gw-a", "gw-b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, ip := range addrs(5) {
				var got []string
				for _, n := range cluster.Rank(ip, tc.nodes, cluster.PlacementPriority) {
					got = append(got, n.Name)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("Rank(%v) (-want +got):\n%s", ip, diff)
				}
			}
		})
	}
}

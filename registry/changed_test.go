package registry

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChanged(t *testing.T) {
	vip := netip.MustParseAddr("198.18.0.10")
	shared := netip.MustParseAddr("198.18.0.100")
	be := netip.MustParseAddrPort("198.19.0.2:80")
	k1, k80, k81 := Key{IP: vip}, Key{IP: shared, Port: 80}, Key{IP: shared, Port: 81}
	tests := []struct {
		name        string
		change      func(t *testing.T, r *Registry)
		want        []Key
		wantRemoved []Key
	}{
		{"register a new binding", func(t *testing.T, r *Registry) {
			if _, err := r.Register(Registration{Name: "c", IP: shared, Port: 81, Backend: be}); err != nil {
				t.Fatal(err)
			}
		}, []Key{k81}, nil},
		{"switch", func(t *testing.T, r *Registry) {
			if _, err := r.Switch(k80, "b"); err != nil {
				t.Fatal(err)
			}
		}, []Key{k80}, nil},
		{"renew", func(t *testing.T, r *Registry) {
			if _, err := r.Renew("a", k1); err != nil {
				t.Fatal(err)
			}
		}, []Key{k1}, nil},
		{"remove a binding", func(t *testing.T, r *Registry) {
			if err := r.Deregister("a", k1); err != nil {
				t.Fatal(err)
			}
		}, nil, []Key{k1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, reg := range []Registration{
				{Name: "a", IP: vip, Backend: be, TTL: MaxTTL},
				{Name: "a", IP: shared, Port: 80, Backend: be, State: Active},
				{Name: "b", IP: shared, Port: 80, Backend: be, State: Standby},
			} {
				if _, err := r.Register(reg); err != nil {
					t.Fatalf("Register(%+v): %v", reg, err)
				}
			}
			var got, removed []Key
			r.Watch(func(prev, next *Table) {
				for _, b := range Changed(prev, next) {
					got = append(got, b.Key)
				}
				for _, b := range Removed(prev, next) {
					removed = append(removed, b.Key)
				}
			})
			tc.change(t, r)
			slices.SortFunc(got, func(a, b Key) int { return strings.Compare(a.String(), b.String()) })
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Changed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantRemoved, removed, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Removed (-want +got):\n%s", diff)
			}
		})
	}
}

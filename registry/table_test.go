package registry

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestTableIndexes checks the indexes that the table keeps change by
// change (the mode-2 bindings for PortBindings, the address counts for
// Holds and AddrDiff) against what a pass over the whole table finds,
// after registrations, a batch, deregistrations with and without a drain,
// the end of the drain and a restore from the state file.
func TestTableIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	r, err := New(Options{Store: &FileStore{Path: path}})
	if err != nil {
		t.Fatal(err)
	}
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	check := func(step string, tb *Table) {
		t.Helper()
		var wantPorts []Key
		wantAddrs := map[netip.Addr]bool{}
		wantLeased := 0
		for _, b := range tb.Bindings() {
			if b.Port != 0 {
				wantPorts = append(wantPorts, b.Key)
			}
			wantAddrs[b.IP] = true
			if slices.ContainsFunc(b.Members, func(m Member) bool { return m.TTL > 0 }) {
				wantLeased++
				if l, ok := tb.leased.get(b.Key); !ok || l != b {
					t.Errorf("%s: leased binding %s missing from the lease index", step, b.Key)
				}
			}
		}
		if tb.leased.Len() != wantLeased {
			t.Errorf("%s: lease index holds %d bindings, want %d", step, tb.leased.Len(), wantLeased)
		}
		for _, d := range tb.Drains() {
			wantAddrs[d.Key.IP] = true
		}
		var gotPorts []Key
		for _, b := range tb.PortBindings() {
			gotPorts = append(gotPorts, b.Key)
		}
		if d := cmp.Diff(wantPorts, gotPorts, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
			t.Errorf("%s: PortBindings() (-want +got):\n%s", step, d)
		}
		gotAddrs := map[netip.Addr]bool{}
		for a := range tb.Addrs() {
			gotAddrs[a] = true
		}
		if !cmp.Equal(wantAddrs, gotAddrs, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
			t.Errorf("%s: Addrs() = %v, want %v", step, gotAddrs, wantAddrs)
		}
		for a := range wantAddrs {
			if !tb.Holds(a) {
				t.Errorf("%s: Holds(%s) = false, want true", step, a)
			}
		}
		if tb.Holds(ip("198.18.9.9")) {
			t.Errorf("%s: Holds(198.18.9.9) = true, want false", step)
		}
		if d := AddrDiff(tb, &Table{}); len(d) != len(wantAddrs) {
			t.Errorf("%s: AddrDiff(table, empty) = %v, want the %d addresses", step, d, len(wantAddrs))
		}
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"register", func() error {
			_, err := r.Register(Registration{Name: "a", IP: ip("198.18.0.10"), Backend: beA})
			return err
		}},
		{"batch of mode 1 and mode 2", func() error {
			_, err := r.RegisterBatch([]Registration{
				{Name: "a", IP: ip("198.18.0.10"), Port: 80, Backend: beA},
				{Name: "b", IP: ip("198.18.0.10"), Port: 80, Backend: beA},
				{Name: "b", IP: ip("198.18.0.11"), Backend: beA, TTL: MaxTTL},
				{Name: "c", IP: ip("198.18.0.12"), Port: 443, Backend: beA},
			})
			return err
		}},
		{"a lease on a port member", func() error {
			_, err := r.Register(Registration{Name: "b", IP: ip("198.18.0.10"), Port: 80, Backend: beA, TTL: MaxTTL})
			return err
		}},
		{"the lease dropped again", func() error {
			_, err := r.Register(Registration{Name: "b", IP: ip("198.18.0.10"), Port: 80, Backend: beA})
			return err
		}},
		{"deregister a port member, binding stays", func() error { return r.Deregister("a", Key{IP: ip("198.18.0.10"), Port: 80}) }},
		{"deregister the last port member", func() error { return r.Deregister("c", Key{IP: ip("198.18.0.12"), Port: 443}) }},
		{"deregister with a drain", func() error { return r.DeregisterDrain("b", Key{IP: ip("198.18.0.11")}, MaxDrain) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		check(s.name, r.Table())
	}
	if n := len(r.Table().Drains()); n != 1 {
		t.Fatalf("drains = %d, want 1", n)
	}
	if !r.Table().Holds(ip("198.18.0.11")) {
		t.Error("the drained member's address is not held")
	}
	r2, err := New(Options{Store: &FileStore{Path: path}})
	if err != nil {
		t.Fatal(err)
	}
	check("restored", r2.Table())
	if got := slices.Collect(func(yield func(string) bool) {
		for _, b := range r2.Table().PortBindings() {
			if !yield(b.Key.String()) {
				return
			}
		}
	}); !slices.Equal(got, []string{"198.18.0.10:80"}) {
		t.Errorf("restored PortBindings() = %v, want [198.18.0.10:80]", got)
	}
}

func TestBindingMember(t *testing.T) {
	r, _ := newRegistry(t,
		Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A},
		Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: be80B},
	)
	b, ok := r.Table().Binding(k80)
	if !ok {
		t.Fatalf("no binding %s", k80)
	}
	tests := []struct {
		name        string
		wantOK      bool
		wantBackend netip.AddrPort
	}{
		{name: "web-a", wantOK: true, wantBackend: be80A},
		{name: "web-b", wantOK: true, wantBackend: be80B},
		{name: "web-c"},
		{name: ""},
	}
	for _, tc := range tests {
		m, ok := b.Member(tc.name)
		if ok != tc.wantOK || m.Backend != tc.wantBackend || (ok && m.Name != tc.name) {
			t.Errorf("Member(%q) = %s %s, %v; want backend %s, %v", tc.name, m.Name, m.Backend, ok, tc.wantBackend, tc.wantOK)
		}
	}
}

func TestMemberOrDraining(t *testing.T) {
	r, _ := newRegistry(t,
		Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A},
		Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: be80B},
		Registration{Name: "web-c", IP: ipShared, Port: 80, Backend: be80C},
	)
	if err := r.DeregisterDrain("web-b", k80, time.Minute); err != nil {
		t.Fatalf("DeregisterDrain(web-b): %v", err)
	}
	if err := r.Deregister("web-c", k80); err != nil {
		t.Fatalf("Deregister(web-c): %v", err)
	}
	tests := []struct {
		name string
		key  Key
		want bool
	}{
		{name: "web-a", key: k80, want: true},  // member
		{name: "web-b", key: k80, want: true},  // draining
		{name: "web-c", key: k80, want: false}, // gone
		{name: "web-a", key: Key{IP: ipShared, Port: 81}, want: false},
		{name: "web-b", key: Key{IP: ipShared, Port: 81}, want: false},
	}
	for _, tc := range tests {
		if got := r.Table().MemberOrDraining(tc.key, tc.name); got != tc.want {
			t.Errorf("MemberOrDraining(%s, %s) = %v, want %v", tc.key, tc.name, got, tc.want)
		}
	}
}

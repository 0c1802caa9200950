package stack_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
)

// TestManyAddresses (issue 14, lever 7): a stack that holds 10,000
// addresses, added by one batch of the registry, answers ARP for every one
// of a random sample and for none of the addresses it does not hold; single
// changes on top of that table add and release just their own address.
func TestManyAddresses(t *testing.T) {
	const n = 10000
	bigNet := netip.MustParsePrefix("198.18.0.0/16")
	st, wire := newStackOpts(t, func(o *stack.Options) { o.Networks = []netip.Prefix{bigNet} })
	r, err := registry.New(registry.Options{Networks: []netip.Prefix{bigNet}})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	if err := r.SetApplier(st); err != nil {
		t.Fatalf("SetApplier: %v", err)
	}
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(100 + i/256), byte(i % 256)}) }
	be := netip.MustParseAddrPort("127.0.0.1:9")
	regs := make([]registry.Registration, n)
	for i := range regs {
		regs[i] = registry.Registration{Name: fmt.Sprintf("s%d", i), IP: ip(i), Backend: be}
	}
	if _, err := r.RegisterBatch(regs); err != nil {
		t.Fatalf("RegisterBatch(%d): %v", n, err)
	}
	if got := len(st.Addrs()); got != n {
		t.Fatalf("after a batch of %d, the stack holds %d addresses", n, got)
	}
	rng := rand.New(rand.NewPCG(14, 7))
	for range 300 {
		a := ip(rng.IntN(n))
		if !whoHas(t, wire, a) {
			t.Errorf("ARP for %s (one of %d held) not answered", a, n)
		}
	}
	for range 50 {
		a := netip.AddrFrom4([4]byte{198, 18, byte(200 + rng.IntN(50)), byte(rng.IntN(256))})
		if whoHas(t, wire, a) {
			t.Errorf("ARP for %s (not held) answered", a)
		}
	}

	// One registration and one deregistration on the full table.
	extra := netip.MustParseAddr("198.18.250.1")
	if _, err := r.Register(registry.Registration{Name: "x", IP: extra, Backend: be}); err != nil {
		t.Fatalf("Register(%s): %v", extra, err)
	}
	gone := ip(1234)
	if err := r.Deregister("s1234", registry.Key{IP: gone}); err != nil {
		t.Fatalf("Deregister(%s): %v", gone, err)
	}
	if got := len(st.Addrs()); got != n {
		t.Errorf("after one registration and one deregistration, the stack holds %d addresses, want %d", got, n)
	}
	for a, want := range map[netip.Addr]bool{extra: true, gone: false, ip(1233): true, ip(1235): true} {
		if got := whoHas(t, wire, a); got != want {
			t.Errorf("ARP for %s answered = %v, want %v", a, got, want)
		}
	}
}

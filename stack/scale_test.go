package stack_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

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
	r, err := registry.New(registry.Options{Networks: []netip.Prefix{bigNet}, AllowLoopbackBackends: true})
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

// TestAddressLogLines: a change of a few addresses logs a line for each, a
// batch logs one line for all (a batch of 10,000 registrations must not
// write 10,000 log lines).
func TestAddressLogLines(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, nil))
	st, _ := newStackOpts(t, func(o *stack.Options) {
		o.Networks = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}
		o.Logger = log
	})
	few := addrs("198.18.1.1", "198.18.1.2", "198.18.1.3")
	var many []netip.Addr
	for i := range 20 {
		many = append(many, netip.AddrFrom4([4]byte{198, 18, 2, byte(i)}))
	}
	empty, withFew, withBoth := table(t), table(t, few...), table(t, append(few, many...)...)
	for _, step := range []struct {
		name      string
		do        func() error
		wantLines []string
	}{
		{"add 3", func() error { return st.Prepare(empty, withFew) }, []string{
			`msg="holding address" ip=198.18.1.1`, `msg="holding address" ip=198.18.1.2`, `msg="holding address" ip=198.18.1.3`}},
		{"add 20", func() error { st.Commit(empty, withFew); return st.Prepare(withFew, withBoth) }, []string{
			`msg="holding addresses" count=20 first=198.18.2.0 last=198.18.2.19`}},
		{"release 20", func() error { st.Commit(withBoth, withFew); return nil }, []string{
			`msg="released addresses" count=20 first=198.18.2.0 last=198.18.2.19`}},
	} {
		mu.Lock()
		buf.Reset()
		mu.Unlock()
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		mu.Lock()
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if _, rest, ok := strings.Cut(l, " level=INFO "); ok {
				got = append(got, rest)
			}
		}
		mu.Unlock()
		if d := cmp.Diff(step.wantLines, got); d != "" {
			t.Errorf("%s: log lines (-want +got):\n%s", step.name, d)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

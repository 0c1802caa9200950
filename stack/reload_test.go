package stack_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/stack"
)

// TestSetStatic checks that SetStatic holds a new static address at once,
// releases the old one, and leaves alone an old static address that the
// table holds, until the table lets it go.
func TestSetStatic(t *testing.T) {
	a10, a100, a101 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("198.18.0.101")
	st, _ := newStack(t, a100)
	empty, t10 := table(t), table(t, a10)
	if err := st.Prepare(empty, t10); err != nil {
		t.Fatalf("Prepare(+%s): %v", a10, err)
	}
	st.Commit(empty, t10)

	if err := st.SetStatic([]netip.Addr{a101}); err != nil {
		t.Fatalf("SetStatic(%s): %v", a101, err)
	}
	if diff := cmp.Diff([]netip.Addr{a10, a101}, st.Addrs(), frameCmp); diff != "" {
		t.Errorf("Addrs() after SetStatic(%s) (-want +got):\n%s", a101, diff)
	}

	// The table's address becomes static: SetStatic adds nothing, and
	// when the table drops it the stack keeps holding it.
	if err := st.SetStatic([]netip.Addr{a10}); err != nil {
		t.Fatalf("SetStatic(%s): %v", a10, err)
	}
	st.Commit(t10, empty)
	if diff := cmp.Diff([]netip.Addr{a10}, st.Addrs(), frameCmp); diff != "" {
		t.Errorf("Addrs() after SetStatic(%s) and the table dropping it (-want +got):\n%s", a10, diff)
	}

	// A static address that the table holds stays when it stops being
	// static, and goes when the table drops it.
	if err := st.Prepare(empty, t10); err != nil {
		t.Fatalf("Prepare(+%s): %v", a10, err)
	}
	st.Commit(empty, t10)
	if err := st.SetStatic(nil); err != nil {
		t.Fatalf("SetStatic(none): %v", err)
	}
	if diff := cmp.Diff([]netip.Addr{a10}, st.Addrs(), frameCmp); diff != "" {
		t.Errorf("Addrs() after SetStatic(none) with %s in the table (-want +got):\n%s", a10, diff)
	}
	st.Commit(t10, empty)
	if got := st.Addrs(); len(got) != 0 {
		t.Errorf("Addrs() after the table dropped %s = %v, want none", a10, got)
	}

	// An address outside the networks is refused and nothing changes.
	if err := st.SetStatic([]netip.Addr{a100, netip.MustParseAddr("198.19.0.1")}); err == nil {
		t.Errorf("SetStatic(outside the networks) = nil, want an error")
	}
	if got := st.Addrs(); len(got) != 0 {
		t.Errorf("Addrs() after a refused SetStatic = %v, want none", got)
	}
}

// TestSetARP checks that new ARP settings apply to the next address: no
// announcement after SetARP(GARPCount 0), and range errors change nothing.
func TestSetARP(t *testing.T) {
	a10 := netip.MustParseAddr("198.18.0.10")
	st, wire := newStackOpts(t, func(o *stack.Options) {
		o.GARPCount = 3
		o.GARPInterval = 20 * time.Millisecond
	})
	if err := st.SetARP(stack.ARPSettings{GARPCount: 300}); err == nil {
		t.Errorf("SetARP(GARPCount 300) = nil, want an error")
	}
	if err := st.SetARP(stack.ARPSettings{GARPCount: 0, DADProbes: 1, DADInterval: 10 * time.Millisecond}); err != nil {
		t.Fatalf("SetARP: %v", err)
	}
	start := time.Now()
	prev, next := table(t), table(t, a10)
	if err := st.Prepare(prev, next); err != nil {
		t.Fatalf("Prepare(+%s): %v", a10, err)
	}
	st.Commit(prev, next)
	if d := time.Since(start); d < 10*time.Millisecond {
		t.Errorf("Prepare with DADProbes 1 x 10ms took %v, want >= 10ms (a probe)", d)
	}
	h := startHost(t, wire)
	time.Sleep(100 * time.Millisecond)
	h.stop()
	got, _ := h.seen()
	if diff := cmp.Diff([]arpFrame{probe(a10)}, got, frameCmp); diff != "" {
		t.Errorf("ARP frames after SetARP(GARPCount 0, DADProbes 1) (-want +got):\n%s", diff)
	}
}

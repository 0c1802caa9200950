package stack_test

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
)

// fakeHolder is a stack.Holder whose set the test changes.
type fakeHolder struct {
	mu   sync.Mutex
	held map[netip.Addr]bool
}

func (h *fakeHolder) Holds(a netip.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held[a]
}

func (h *fakeHolder) set(addrs ...netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = map[netip.Addr]bool{}
	for _, a := range addrs {
		h.held[a] = true
	}
}

// TestHolder checks that with a Holder the stack holds (and answers ARP
// for) only the table addresses that the Holder holds, follows a change of
// the Holder on Rehold, and follows table changes within the held set.
func TestHolder(t *testing.T) {
	a10, a20, a30 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.20"), netip.MustParseAddr("198.18.0.30")
	all := []netip.Addr{a10, a20, a30}
	h := &fakeHolder{}
	h.set(a10)
	st, wire := newStackOpts(t, func(o *stack.Options) { o.Holder = h })
	t1 := table(t, all...)
	if err := st.Prepare(&registry.Table{}, t1); err != nil {
		t.Fatalf("Prepare(empty, %v): %v", all, err)
	}
	st.Commit(&registry.Table{}, t1)
	want := map[netip.Addr]bool{a10: true, a20: false, a30: false}
	if diff := cmp.Diff(want, answers(t, wire, all...)); diff != "" {
		t.Fatalf("answers with a10 held (-want +got):\n%s", diff)
	}

	h.set(a20, a30)
	added, err := st.Rehold()
	if err != nil {
		t.Fatalf("Rehold: %v", err)
	}
	if diff := cmp.Diff([]netip.Addr{a20, a30}, added, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("Rehold added (-want +got):\n%s", diff)
	}
	wire.Drain() // the announcements of a20, a30
	want = map[netip.Addr]bool{a10: false, a20: true, a30: true}
	if diff := cmp.Diff(want, answers(t, wire, all...)); diff != "" {
		t.Fatalf("answers after Rehold with a20, a30 held (-want +got):\n%s", diff)
	}

	// a20 leaves the table: released although still "held".
	t2 := table(t, a10, a30)
	if err := st.Prepare(t1, t2); err != nil {
		t.Fatalf("Prepare(t1, t2): %v", err)
	}
	st.Commit(t1, t2)
	want = map[netip.Addr]bool{a10: false, a20: false, a30: true}
	if diff := cmp.Diff(want, answers(t, wire, all...)); diff != "" {
		t.Fatalf("answers after a20 left the table (-want +got):\n%s", diff)
	}
	if got, want := st.Addrs(), []netip.Addr{a30}; !cmp.Equal(got, want, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })) {
		t.Errorf("Addrs() = %v, want %v", got, want)
	}
}

// TestReholdConflict checks the takeover tripwire: a newly held address
// that another host still answers for is not held, and Rehold names it.
func TestReholdConflict(t *testing.T) {
	a10, a20 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.20")
	h := &fakeHolder{}
	st, wire := newStackOpts(t, func(o *stack.Options) {
		o.Holder = h
		o.DADProbes = 1
		o.DADInterval = 50 * time.Millisecond
	})
	tb := table(t, a10, a20)
	if err := st.Prepare(&registry.Table{}, tb); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	st.Commit(&registry.Table{}, tb)
	host := startHost(t, wire, a20)
	h.set(a10, a20)
	_, err := st.Rehold()
	var conflict *stack.ConflictError
	if !errors.As(err, &conflict) || conflict.Addr != a20 {
		t.Fatalf("Rehold with a20 answered by another host: err = %v, want a *ConflictError for %v", err, a20)
	}
	if got := st.Addrs(); len(got) != 0 {
		t.Errorf("Addrs() after the conflict = %v, want none", got)
	}
	h.set(a10)
	added, err := st.Rehold()
	if err != nil || len(added) != 1 || added[0] != a10 {
		t.Fatalf("Rehold with a10 only = %v, %v; want [%v], nil", added, err, a10)
	}
	host.stop()
}

// TestRefresh checks [arp] refresh: every held address is announced again
// once per interval, after its first announcement.
func TestRefresh(t *testing.T) {
	a10, a20 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.20")
	st, wire := newStackOpts(t, func(o *stack.Options) {
		o.Static = []netip.Addr{a10, a20}
		o.GARPCount = 1
		o.Refresh = stack.MinARPRefresh
	})
	host := startHost(t, wire)
	waitFrames(host, 4)
	host.stop()
	got, _ := host.seen()
	got = got[:min(len(got), 4)]
	want := []arpFrame{announcement(a10), announcement(a20), announcement(a10), announcement(a20)}
	if diff := cmp.Diff(want, got, frameCmp, byTarget); diff != "" {
		t.Errorf("frames within the first refresh round (-want +got):\n%s", diff)
	}
	if err := st.SetARP(stack.ARPSettings{GARPCount: 1, Refresh: 500 * time.Millisecond}); err == nil {
		t.Errorf("SetARP(Refresh 500ms) = nil, want an out-of-range error")
	}
	if err := st.SetARP(stack.ARPSettings{GARPCount: 1}); err != nil {
		t.Errorf("SetARP(Refresh 0) = %v, want nil (off)", err)
	}
}

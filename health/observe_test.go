package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/registry"
)

// dialErr is a failed dial as a net.Dialer returns it.
func dialErr(addr string, err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)), Err: os.NewSyscallError("connect", err)}
}

// waitProbed waits until Run has a prober (and so a passive input) for n
// members.
func waitProbed(t testing.TB, c *Checker, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d members probed", n), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.observed) == n
	})
}

// TestDialFailed: failed client dials reported to the checker (passive
// checking) mark the member down without any failed probe: a refused or
// unreachable dial at once, a timeout only after Fall of them. The probes
// themselves all pass (the servers live) and come once an hour, so only
// the reports can move anything.
func TestDialFailed(t *testing.T) {
	key := registry.Key{IP: sharedIP, Port: 8080}
	refused := dialErr("127.0.0.1:8080", syscall.ECONNREFUSED)
	timeout := fmt.Errorf("dial tcp 127.0.0.1:8080: %w", context.DeadlineExceeded)
	for _, tc := range []struct {
		name string
		fall int
		// reports are the errors reported for web-a, one after another.
		reports []error
		// wantDownAfter is how many reports it takes to mark web-a down;
		// 0 means none does.
		wantDownAfter int
		wantReason    string
	}{
		{name: "refused marks down at once", fall: 2, reports: []error{refused}, wantDownAfter: 1, wantReason: "connection refused"},
		{name: "reset marks down at once", fall: 3, reports: []error{dialErr("127.0.0.1:8080", syscall.ECONNRESET)}, wantDownAfter: 1, wantReason: "connection reset"},
		{name: "host unreachable marks down at once", fall: 2, reports: []error{dialErr("127.0.0.1:8080", syscall.EHOSTUNREACH)}, wantDownAfter: 1, wantReason: "no route to host"},
		{name: "a timeout counts as one failed check", fall: 2, reports: []error{timeout, timeout}, wantDownAfter: 2, wantReason: "deadline exceeded"},
		{name: "a timeout with fall 1", fall: 1, reports: []error{timeout}, wantDownAfter: 1, wantReason: "deadline exceeded"},
		{name: "three timeouts with fall 3", fall: 3, reports: []error{timeout, timeout, timeout}, wantDownAfter: 3, wantReason: "deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newServer(t), newServer(t)
			r := newRegistry(t, false)
			register(t, r, "web-a", 8080, a.addr, registry.Active)
			register(t, r, "web-b", 8080, b.addr, registry.Standby)
			c := run(t, Options{Registry: r, Defaults: Settings{Interval: time.Hour, Timeout: time.Second, Rise: 2, Fall: tc.fall}})
			waitProbed(t, c, 2)

			for i, err := range tc.reports {
				if !c.DialFailed(key, "web-a", err) {
					t.Fatalf("DialFailed(web-a) = false, want true: web-a is probed, so under automatic failover")
				}
				if i+1 < tc.wantDownAfter {
					// Not yet: the report is taken (the input is empty
					// again) and web-a is still serving.
					waitFor(t, "report taken", func() bool { return len(c.observedOf(key, "web-a")) == 0 })
					stays(t, fmt.Sprintf("web-a serving after %d report(s) with fall %d", i+1, tc.fall), 50*time.Millisecond,
						func() bool { return serving(r, 8080) == "web-a" })
				}
			}
			waitFor(t, "failover to web-b", func() bool { return serving(r, 8080) == "web-b" })
			ma := member(t, r, 8080, "web-a")
			wantPrefix := ReasonFailedPrefix + ReasonObservedPrefix
			if !ma.Down || !ma.FailedOver || !strings.HasPrefix(ma.Reason, wantPrefix) || !strings.Contains(ma.Reason, tc.wantReason) {
				t.Errorf("web-a after the reports: Down=%v FailedOver=%v Reason=%q, want down, failed over, reason %q...%q", ma.Down, ma.FailedOver, ma.Reason, wantPrefix, tc.wantReason)
			}
			if mb := member(t, r, 8080, "web-b"); !strings.Contains(mb.Reason, "automatic failover: web-a "+wantPrefix) {
				t.Errorf("web-b Reason = %q, want the automatic failover with web-a's reason", mb.Reason)
			}
		})
	}
}

// observedOf returns member name's passive input, or nil.
func (c *Checker) observedOf(k registry.Key, name string) chan error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.observed[memberID{key: k, name: name}]
}

// TestDialFailedIgnored: reports about members that are not probed (mode
// 1, unknown, or while Run does not run) change nothing and never block,
// and a prober busy in a probe does not block the reporter either.
func TestDialFailedIgnored(t *testing.T) {
	refused := dialErr("127.0.0.1:1", syscall.ECONNREFUSED)
	r := newRegistry(t, false)
	mode1 := registry.Key{IP: netip.MustParseAddr("198.18.0.10")}
	if _, err := r.Register(registry.Registration{Name: "mode1", IP: mode1.IP, Backend: netip.MustParseAddrPort("127.0.0.9:0")}); err != nil {
		t.Fatalf("Register mode 1: %v", err)
	}
	key := registry.Key{IP: sharedIP, Port: 8080}
	register(t, r, "web-a", 8080, netip.MustParseAddrPort("127.0.0.2:1"), registry.Active)
	register(t, r, "web-b", 8080, netip.MustParseAddrPort("127.0.0.3:1"), registry.Standby)

	c, err := New(Options{Registry: r})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if c.DialFailed(key, "web-a", refused) { // no Run: ignored
		t.Errorf("DialFailed(web-a) with no Run running = true, want false (no automatic failover)")
	}
	if m := member(t, r, 8080, "web-a"); m.Down {
		t.Fatalf("web-a marked down by a report while no Run runs: %+v", m)
	}

	// Every probe blocks until Run stops: the probers never read their
	// input, and reports must still return at once.
	started := make(chan struct{}, 2)
	block := func(ctx context.Context, network, addr string) (net.Conn, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	c = run(t, Options{Registry: r, Defaults: Settings{Interval: time.Second, Timeout: time.Minute}, Dial: block})
	waitProbed(t, c, 2)
	for range 2 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("probers did not dial within 5s")
		}
	}
	returned := make(chan []bool, 1)
	go func() {
		var got []bool
		for range 10 {
			got = append(got, c.DialFailed(key, "web-a", refused), c.DialFailed(mode1, "mode1", refused), c.DialFailed(key, "nobody", refused))
		}
		returned <- got[len(got)-3:]
	}()
	select {
	case got := <-returned:
		if diff := cmp.Diff([]bool{true, false, false}, got); diff != "" {
			t.Errorf("DialFailed of [web-a, a mode-1 member, an unknown member] (-want +got):\n%s", diff)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("DialFailed blocked while the prober was busy in a probe")
	}
	if tbl := r.Table(); tbl.Len() != 2 {
		t.Errorf("table has %d bindings after ignored reports, want 2", tbl.Len())
	}
	if m, _, _ := r.Lookup(mode1.IP, 80); m.Down {
		t.Errorf("mode-1 member marked down by a report: %+v", m)
	}
}

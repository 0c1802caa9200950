package health

import (
	"context"
	"errors"
	"github.com/vipmux/vipmux/internal/leakcheck"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/registry"
)

var sharedIP = netip.MustParseAddr("198.18.0.100")

// fast are settings that make the tests quick without being tight.
var fast = Settings{Interval: 10 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 2, Fall: 2}

// server is a kernel listener on 127.0.0.1 that accepts and closes; Close
// is the server's death, Restart brings it back on the same port.
type server struct {
	t    testing.TB
	addr netip.AddrPort
	mu   sync.Mutex
	ln   net.Listener
}

func newServer(t testing.TB) *server {
	t.Helper()
	s := &server{t: t}
	s.listen("127.0.0.1:0")
	s.addr = netip.MustParseAddrPort(s.ln.Addr().String())
	t.Cleanup(s.Close)
	return s
}

func (s *server) listen(addr string) {
	s.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("net.Listen(%s): %v", addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// Close kills the server: further connects are refused.
func (s *server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

// Restart listens on the server's port again.
func (s *server) Restart() { s.listen(s.addr.String()) }

// newRegistry returns an in-memory registry with failback as given.
func newRegistry(t testing.TB, failback bool) *registry.Registry {
	t.Helper()
	r, err := registry.New(registry.Options{Failback: failback, AllowLoopbackBackends: true})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	return r
}

func register(t testing.TB, r *registry.Registry, name string, port uint16, backend netip.AddrPort, state registry.State) {
	t.Helper()
	if _, err := r.Register(registry.Registration{Name: name, IP: sharedIP, Port: port, Backend: backend, State: state}); err != nil {
		t.Fatalf("Register(%s on port %d): %v", name, port, err)
	}
}

// run starts a Checker over opts and stops it in cleanup, failing the test
// if Run does not return or leaves goroutines behind.
func run(t testing.TB, opts Options) *Checker {
	t.Helper()
	leakcheck.Goroutines(t)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of cancel")
		}
	})
	return c
}

// member returns member name of binding (sharedIP, port).
func member(t testing.TB, r *registry.Registry, port uint16, name string) registry.Member {
	t.Helper()
	b, ok := r.Table().Binding(registry.Key{IP: sharedIP, Port: port})
	if !ok {
		t.Fatalf("no binding on port %d", port)
	}
	for _, m := range b.Members {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no member %s on port %d", name, port)
	return registry.Member{}
}

// serving returns the name of the member that new connections to port go
// to, or "" for none.
func serving(r *registry.Registry, port uint16) string {
	m, _, ok := r.Lookup(sharedIP, port)
	if !ok {
		return ""
	}
	return m.Name
}

// waitFor polls cond every 5 ms for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stays fails the test if cond turns false within d.
func stays(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("%s stopped holding within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFailoverAndRecovery(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failback bool
		// wantAfterRecovery is the serving member once web-a is back.
		wantAfterRecovery string
	}{
		{name: "no failback", failback: false, wantAfterRecovery: "web-b"},
		{name: "failback", failback: true, wantAfterRecovery: "web-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newServer(t), newServer(t)
			r := newRegistry(t, tc.failback)
			register(t, r, "web-a", 8080, a.addr, registry.Active)
			register(t, r, "web-b", 8080, b.addr, registry.Standby)
			run(t, Options{Registry: r, Defaults: fast})

			stays(t, "web-a serving while both servers live", 100*time.Millisecond, func() bool { return serving(r, 8080) == "web-a" })

			start := time.Now()
			a.Close()
			waitFor(t, "failover to web-b", func() bool { return serving(r, 8080) == "web-b" })
			t.Logf("failover after %v", time.Since(start))

			ma, mb := member(t, r, 8080, "web-a"), member(t, r, 8080, "web-b")
			if !ma.Down || !strings.HasPrefix(ma.Reason, ReasonFailedPrefix) || !ma.FailedOver {
				t.Errorf("web-a after its death: Down=%v FailedOver=%v Reason=%q, want down, failed over, reason %q...", ma.Down, ma.FailedOver, ma.Reason, ReasonFailedPrefix)
			}
			if !strings.Contains(mb.Reason, "automatic failover") {
				t.Errorf("web-b Reason = %q, want it to mention automatic failover", mb.Reason)
			}
			var whats []string
			for _, e := range r.Events() {
				whats = append(whats, e.Member+" "+e.What)
			}
			if diff := cmp.Diff([]string{"web-a down", "web-a demoted", "web-b promoted"}, whats); diff != "" {
				t.Errorf("Events() after failover (-want +got):\n%s", diff)
			}

			a.Restart()
			waitFor(t, "web-a up again", func() bool { return !member(t, r, 8080, "web-a").Down })
			if got := member(t, r, 8080, "web-a").Reason; !strings.Contains(got, ReasonPassed) {
				t.Errorf("web-a Reason after recovery = %q, want it to contain %q", got, ReasonPassed)
			}
			stays(t, "serving member after recovery", 100*time.Millisecond, func() bool { return serving(r, 8080) == tc.wantAfterRecovery })
		})
	}
}

// TestNoHealthyStandby: with the standby dead too, the dead active stays
// (the port answers RST); the first standby to recover takes over.
func TestNoHealthyStandby(t *testing.T) {
	a, b := newServer(t), newServer(t)
	r := newRegistry(t, false)
	register(t, r, "web-a", 8080, a.addr, registry.Active)
	register(t, r, "web-b", 8080, b.addr, registry.Standby)
	run(t, Options{Registry: r, Defaults: fast})

	b.Close()
	waitFor(t, "web-b down", func() bool { return member(t, r, 8080, "web-b").Down })
	a.Close()
	waitFor(t, "web-a down", func() bool { return member(t, r, 8080, "web-a").Down })
	if got := serving(r, 8080); got != "" {
		t.Errorf("serving with both down = %q, want none", got)
	}
	b.Restart()
	waitFor(t, "web-b serving after it recovered", func() bool { return serving(r, 8080) == "web-b" })
}

// TestPortSettings: port 9090 probes only once an hour, so its dead active
// is not noticed, while port 8080 (defaults) fails over.
func TestPortSettings(t *testing.T) {
	a80, b80, a90, b90 := newServer(t), newServer(t), newServer(t), newServer(t)
	r := newRegistry(t, false)
	register(t, r, "web-a", 8080, a80.addr, registry.Active)
	register(t, r, "web-b", 8080, b80.addr, registry.Standby)
	register(t, r, "web-a", 9090, a90.addr, registry.Active)
	register(t, r, "web-b", 9090, b90.addr, registry.Standby)
	c := run(t, Options{Registry: r, Defaults: fast, Ports: map[uint16]Settings{9090: {Interval: time.Hour}}})

	want := Settings{Interval: time.Hour, Timeout: fast.Timeout, Rise: fast.Rise, Fall: fast.Fall}
	if diff := cmp.Diff(want, c.Settings(9090)); diff != "" {
		t.Errorf("Settings(9090) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(fast, c.Settings(8080)); diff != "" {
		t.Errorf("Settings(8080) (-want +got):\n%s", diff)
	}

	time.Sleep(50 * time.Millisecond) // let the first probes pass
	a80.Close()
	a90.Close()
	waitFor(t, "failover on 8080", func() bool { return serving(r, 8080) == "web-b" })
	stays(t, "web-a serving on 9090 (probed hourly)", 200*time.Millisecond, func() bool { return serving(r, 9090) == "web-a" })
}

// dialLog is an Options.Dial that records the addresses dialled and
// refuses every connection.
type dialLog struct {
	mu    sync.Mutex
	addrs map[string]int
}

func (d *dialLog) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.addrs == nil {
		d.addrs = map[string]int{}
	}
	d.addrs[addr]++
	return nil, errors.New("refused by test")
}

func (d *dialLog) dialled() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for a := range d.addrs {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// TestTargets: mode-1 bindings are not probed; a backend without a port is
// probed on the binding's port; members that join after Run starts are
// probed, members that leave are not any more.
func TestTargets(t *testing.T) {
	r := newRegistry(t, false)
	if _, err := r.Register(registry.Registration{Name: "mode1", IP: netip.MustParseAddr("198.18.0.10"), Backend: netip.MustParseAddrPort("127.0.0.9:0")}); err != nil {
		t.Fatalf("Register mode 1: %v", err)
	}
	register(t, r, "web-a", 8080, netip.MustParseAddrPort("127.0.0.2:0"), registry.Active)
	var d dialLog
	run(t, Options{Registry: r, Defaults: fast, Dial: d.dial})

	waitFor(t, "web-a probed", func() bool { return len(d.dialled()) > 0 })
	register(t, r, "web-b", 8080, netip.MustParseAddrPort("127.0.0.3:81"), registry.Standby)
	waitFor(t, "web-b probed", func() bool { return len(d.dialled()) > 1 })
	if diff := cmp.Diff([]string{"127.0.0.2:8080", "127.0.0.3:81"}, d.dialled()); diff != "" {
		t.Errorf("addresses probed (-want +got):\n%s", diff)
	}

	if err := r.Deregister("web-b", registry.Key{IP: sharedIP, Port: 8080}); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // a probe in flight may still land
	d.mu.Lock()
	n := d.addrs["127.0.0.3:81"]
	d.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	d.mu.Lock()
	after := d.addrs["127.0.0.3:81"]
	d.mu.Unlock()
	if after != n {
		t.Errorf("web-b probed %d more times after Deregister, want 0", after-n)
	}
}

// TestLeaseDownStaysDown: a member that its lease marked down is not
// brought up by a passing health check.
func TestLeaseDownStaysDown(t *testing.T) {
	a := newServer(t)
	r := newRegistry(t, false)
	if _, err := r.Register(registry.Registration{Name: "web-a", IP: sharedIP, Port: 8080, Backend: a.addr, TTL: registry.MinTTL}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	time.Sleep(registry.MinTTL + 10*time.Millisecond)
	if n := r.Expire(); n != 1 {
		t.Fatalf("Expire() = %d, want 1", n)
	}
	run(t, Options{Registry: r, Defaults: fast})
	stays(t, "web-a down by lease", 200*time.Millisecond, func() bool {
		m := member(t, r, 8080, "web-a")
		return m.Down && m.DownCause == registry.DownLease
	})
}

// TestStopsWhileDialling: cancelling Run stops probers blocked in a dial.
func TestStopsWhileDialling(t *testing.T) {
	r := newRegistry(t, false)
	register(t, r, "web-a", 8080, netip.MustParseAddrPort("127.0.0.2:1"), registry.Active)
	register(t, r, "web-b", 8080, netip.MustParseAddrPort("127.0.0.3:1"), registry.Standby)
	started := make(chan struct{}, 2)
	block := func(ctx context.Context, network, addr string) (net.Conn, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	// A timeout of a minute: only the cancellation can end the dials.
	run(t, Options{Registry: r, Defaults: Settings{Interval: time.Second, Timeout: time.Minute}, Dial: block})
	for range 2 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("probers did not dial within 5s")
		}
	}
	// Cleanup cancels Run and checks that it returns and leaks nothing.
}

func TestNewErrors(t *testing.T) {
	r := newRegistry(t, false)
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr []string
	}{
		{name: "no registry", opts: Options{}, wantErr: []string{"Registry is required"}},
		{name: "bad defaults", opts: Options{Registry: r, Defaults: Settings{Interval: time.Millisecond, Timeout: 2 * time.Minute, Rise: -1, Fall: 101}},
			wantErr: []string{"defaults: interval 1ms", "timeout 2m0s", "rise -1", "fall 101"}},
		{name: "bad port", opts: Options{Registry: r, Ports: map[uint16]Settings{8080: {Fall: 1000}, 0: {}}},
			wantErr: []string{"port 8080: fall 1000", "port 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			if err == nil {
				t.Fatalf("New(%+v) = nil error, want %q", tc.opts, tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
	c, err := New(Options{Registry: r})
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	if diff := cmp.Diff(DefaultSettings, c.Settings(8080)); diff != "" {
		t.Errorf("default Settings (-want +got):\n%s", diff)
	}
}

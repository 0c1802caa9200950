package dispatch_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
)

// observer is a dispatch.Observer that records the failed dials reported
// to it, as "member kind" with kind "refused", "timeout" or "other", runs
// hook (if set) on each, and answers noFailover's opposite.
type observer struct {
	noFailover bool
	mu         sync.Mutex
	seen       []string
	keys       []registry.Key
	hook       func(k registry.Key, member string)
}

func (o *observer) DialFailed(k registry.Key, member string, err error) bool {
	kind := "other"
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		kind = "refused"
	case errors.Is(err, context.DeadlineExceeded):
		kind = "timeout"
	}
	o.mu.Lock()
	o.seen = append(o.seen, member+" "+kind)
	o.keys = append(o.keys, k)
	hook := o.hook
	o.mu.Unlock()
	if hook != nil {
		hook(k, member)
	}
	return !o.noFailover
}

func (o *observer) reports() ([]string, []registry.Key) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.seen...), append([]registry.Key(nil), o.keys...)
}

// TestRedispatch: a connection whose dial to the member that Lookup chose
// fails is dialled to the binding's next healthy member before the
// client's handshake completes, so the client is served, when the
// Observer answers that the member is under automatic failover; every
// failed dial is reported to the Observer, and counted as a redispatch of
// its member.
func TestRedispatch(t *testing.T) {
	port := registry.Key{IP: shared, Port: 8080}
	mode1 := registry.Key{IP: vip}
	type member struct {
		name  string
		state registry.State
		// backend: "live" answers its name; "refused" refuses; "blackhole"
		// never answers (the dial times out).
		backend string
		down    bool // marked down by a health check before the dial
	}
	tests := []struct {
		name    string
		key     registry.Key
		members []member
		// noFailover makes the Observer answer that the member is not
		// under automatic failover (health checks off).
		noFailover bool
		// onFailure, when set, runs in the observer on the first failed
		// dial: the table changes while the connection is being dialled.
		onFailure func(t *testing.T, reg *registry.Registry)
		// wantServer is the member whose backend answers; "" means the
		// client gets a RST.
		wantServer   string
		wantReports  []string
		wantOutcomes map[dispatch.Outcome]uint64
		// wantStats are the members' non-zero counters as
		// "redispatched", "proxied" or "refused" counts.
		wantStats map[string]map[string]uint64
	}{
		{
			name: "active refused, standby serves",
			key:  port,
			members: []member{
				{name: "A", state: registry.Active, backend: "refused"},
				{name: "B", state: registry.Standby, backend: "live"},
			},
			wantServer:   "B",
			wantReports:  []string{"A refused"},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Proxied: 1},
			wantStats:    map[string]map[string]uint64{"A": {"redispatched": 1}, "B": {"proxied": 1}},
		},
		{
			name: "active and first standby refused, second standby serves",
			key:  port,
			members: []member{
				{name: "A", state: registry.Active, backend: "refused"},
				{name: "B", state: registry.Standby, backend: "refused"},
				{name: "C", state: registry.Standby, backend: "live"},
			},
			wantServer:   "C",
			wantReports:  []string{"A refused", "B refused"},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Proxied: 1},
			wantStats:    map[string]map[string]uint64{"A": {"redispatched": 1}, "B": {"redispatched": 1}, "C": {"proxied": 1}},
		},
		{
			name: "a standby that is down is skipped",
			key:  port,
			members: []member{
				{name: "A", state: registry.Active, backend: "refused"},
				{name: "B", state: registry.Standby, backend: "live", down: true},
				{name: "C", state: registry.Standby, backend: "live"},
			},
			wantServer:   "C",
			wantReports:  []string{"A refused"},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Proxied: 1},
			wantStats:    map[string]map[string]uint64{"A": {"redispatched": 1}, "C": {"proxied": 1}},
		},
		{
			name: "active times out, standby serves",
			key:  port,
			members: []member{
				{name: "A", state: registry.Active, backend: "blackhole"},
				{name: "B", state: registry.Standby, backend: "live"},
			},
			wantServer:   "B",
			wantReports:  []string{"A timeout"},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Proxied: 1},
			wantStats:    map[string]map[string]uint64{"A": {"redispatched": 1}, "B": {"proxied": 1}},
		},
		{
			name: "every member refused: RST, each tried once",
			key:  port,
			members: []member{
				{name: "A", state: registry.Active, backend: "refused"},
				{name: "B", state: registry.Standby, backend: "refused"},
			},
			wantReports:  []string{"A refused", "B refused"},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Refused: 1},
			wantStats:    map[string]map[string]uint64{"A": {"redispatched": 1}, "B": {"refused": 1}},
		},
		{
			name: "after a failover during the dial, the new active goes first",
			key:  port,
			members: []member{
				{name: "A", state: registry.Active, backend: "refused"},
				{name: "B", state: registry.Standby, backend: "live"},
				{name: "C", state: registry.Standby, backend: "live"},
			},
			onFailure: func(t *testing.T, reg *registry.Registry) {
				if _, err := reg.Switch(port, "C"); err != nil {
					t.Errorf("Switch(%s, C): %v", port, err)
				}
			},
			wantServer:   "C",
			wantReports:  []string{"A refused"},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Proxied: 1},
			wantStats:    map[string]map[string]uint64{"A": {"redispatched": 1}, "C": {"proxied": 1}},
		},
		{
			name: "no automatic failover: RST, as without redispatch",
			key:  port,
			members: []member{
				{name: "A", state: registry.Active, backend: "refused"},
				{name: "B", state: registry.Standby, backend: "live"},
			},
			noFailover:   true,
			wantReports:  []string{"A refused"},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Refused: 1},
			wantStats:    map[string]map[string]uint64{"A": {"refused": 1}},
		},
		{
			name:         "mode 1: one member, nothing to redispatch to",
			key:          mode1,
			members:      []member{{name: "A", backend: "refused"}},
			wantReports:  []string{"A refused"},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Refused: 1},
			wantStats:    map[string]map[string]uint64{"A": {"refused": 1}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			blackhole := netip.MustParseAddrPort("127.0.0.1:9") // never dialled for real
			obs := observer{noFailover: tc.noFailover}
			var std net.Dialer
			e := newEnv(t, dispatch.Options{
				Observer:    &obs,
				DialTimeout: 200 * time.Millisecond,
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					if addr == blackhole.String() {
						<-ctx.Done()
						return nil, ctx.Err()
					}
					return std.DialContext(ctx, network, addr)
				},
			})
			for _, m := range tc.members {
				var be netip.AddrPort
				switch m.backend {
				case "live":
					be = newBackend(t, namedEcho(m.name)).addr
				case "refused":
					be = closedPort(t)
				case "blackhole":
					be = blackhole
				}
				e.register(t, registry.Registration{Name: m.name, IP: tc.key.IP, Port: tc.key.Port, Backend: be, State: m.state})
				if m.down {
					if err := e.reg.SetHealth(tc.key, m.name, false, "test"); err != nil {
						t.Fatalf("SetHealth(%s down): %v", m.name, err)
					}
				}
			}
			if tc.onFailure != nil {
				var once sync.Once
				obs.hook = func(registry.Key, string) { once.Do(func() { tc.onFailure(t, e.reg) }) }
			}

			dst := netip.AddrPortFrom(tc.key.IP, 8080)
			c, err := e.dial(dst)
			switch {
			case tc.wantServer == "" && err == nil:
				c.Close()
				t.Fatalf("DialContextTCP(%s) succeeded, want connection refused", dst)
			case tc.wantServer == "" && !strings.Contains(err.Error(), "refused"):
				t.Fatalf("DialContextTCP(%s) = %v, want connection refused (RST)", dst, err)
			case tc.wantServer != "" && err != nil:
				t.Fatalf("DialContextTCP(%s) = %v, want a connection served by %s", dst, err, tc.wantServer)
			case tc.wantServer != "":
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				name, err := bufio.NewReader(c).ReadString('\n')
				c.Close()
				if err != nil || strings.TrimSpace(name) != tc.wantServer {
					t.Fatalf("first line from %s = %q, %v; want %q (the member that served)", dst, name, err, tc.wantServer)
				}
			}

			reports, keys := obs.reports()
			if diff := cmp.Diff(tc.wantReports, reports); diff != "" {
				t.Errorf("failed dials reported to the Observer (-want +got):\n%s", diff)
			}
			for _, k := range keys {
				if k != tc.key {
					t.Errorf("Observer told about binding %s, want %s", k, tc.key)
				}
			}
			if diff := cmp.Diff(tc.wantOutcomes, nonZero(e.fwd.Outcomes())); diff != "" {
				t.Errorf("Outcomes() (-want +got):\n%s", diff)
			}
			got := map[string]map[string]uint64{}
			var total uint64
			for _, s := range e.fwd.Stats() {
				if s.Binding != tc.key {
					continue
				}
				m := map[string]uint64{}
				for name, v := range map[string]uint64{"redispatched": s.Redispatched, "proxied": s.Outcomes[dispatch.Proxied], "refused": s.Outcomes[dispatch.Refused]} {
					if v != 0 {
						m[name] = v
					}
				}
				if len(m) > 0 {
					got[s.Member] = m
				}
				total += s.Redispatched
			}
			if diff := cmp.Diff(tc.wantStats, got); diff != "" {
				t.Errorf("Stats() of %s (-want +got):\n%s", tc.key, diff)
			}
			if r := e.fwd.Redispatched(); r != total {
				t.Errorf("Redispatched() = %d, want %d (the members' sum)", r, total)
			}
		})
	}
}

// TestObserverNotToldOnClose: a dial cut short by Close is neither
// reported nor redispatched.
func TestObserverNotToldOnClose(t *testing.T) {
	dialing := make(chan struct{}, 2)
	var obs observer
	e := newEnv(t, dispatch.Options{
		Observer:    &obs,
		DialTimeout: time.Minute,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dialing <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	e.register(t, registry.Registration{Name: "A", IP: shared, Port: 8080, Backend: netip.MustParseAddrPort("127.0.0.1:9"), State: registry.Active})
	e.register(t, registry.Registration{Name: "B", IP: shared, Port: 8080, Backend: netip.MustParseAddrPort("127.0.0.2:9"), State: registry.Standby})
	dst := netip.AddrPortFrom(shared, 8080)
	closeDuringDial(t, e, dst, dialing)
	if reports, _ := obs.reports(); len(reports) != 0 {
		t.Errorf("Observer told %v about a dial cut short by Close, want nothing", reports)
	}
	if n := len(dialing); n != 0 {
		t.Errorf("%d more dial(s) after Close, want no redispatch", n)
	}
	if r := e.fwd.Redispatched(); r != 0 {
		t.Errorf("Redispatched() = %d after Close, want 0", r)
	}
}

// readName reads the first line that the backend behind c says (namedEcho)
// and closes c.
func readName(t testing.TB, c net.Conn) string {
	t.Helper()
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the backend's name: %v", err)
	}
	return strings.TrimSpace(name)
}

// TestDialCutShortWhenMarkedDown: a dial that waits on a silent backend
// ends as soon as the table marks its member down, if another member of
// the binding is up, and the connection is redispatched; alone, the
// member keeps its pending dial, which may still succeed.
func TestDialCutShortWhenMarkedDown(t *testing.T) {
	port := registry.Key{IP: shared, Port: 8080}
	dst := netip.AddrPortFrom(shared, 8080)
	for _, tc := range []struct {
		name        string
		withStandby bool
		wantServer  string
		wantStats   map[string]map[string]uint64
	}{
		{name: "with a healthy standby: redispatched", withStandby: true, wantServer: "B",
			wantStats: map[string]map[string]uint64{"A": {"redispatched": 1}, "B": {"proxied": 1}}},
		{name: "alone: the dial goes on", wantServer: "A",
			wantStats: map[string]map[string]uint64{"A": {"proxied": 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			silent := netip.MustParseAddrPort("127.0.0.1:9") // never dialled for real
			a := newBackend(t, namedEcho("A"))
			dialling, release := make(chan struct{}, 1), make(chan struct{})
			var std net.Dialer
			// The Observer says "no failover": only the table can
			// redispatch here.
			obs := observer{noFailover: true}
			e := newEnv(t, dispatch.Options{
				Observer:    &obs,
				DialTimeout: time.Minute,
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					if addr != silent.String() {
						return std.DialContext(ctx, network, addr)
					}
					dialling <- struct{}{}
					select {
					case <-ctx.Done():
						return nil, ctx.Err()
					case <-release: // the silent backend answers after all
						return std.DialContext(ctx, network, a.addr.String())
					}
				},
			})
			e.register(t, registry.Registration{Name: "A", IP: shared, Port: 8080, Backend: silent, State: registry.Active})
			if tc.withStandby {
				e.register(t, registry.Registration{Name: "B", IP: shared, Port: 8080, Backend: newBackend(t, namedEcho("B")).addr, State: registry.Standby})
			}
			type result struct {
				c   net.Conn
				err error
			}
			done := make(chan result, 1)
			go func() {
				c, err := e.dial(dst)
				done <- result{c, err}
			}()
			select {
			case <-dialling:
			case <-time.After(5 * time.Second):
				t.Fatal("backend dial not started within 5s of the client's SYN")
			}
			if err := e.reg.SetHealth(port, "A", false, "health check failed: test"); err != nil {
				t.Fatalf("SetHealth(A down): %v", err)
			}
			if !tc.withStandby {
				close(release)
			}
			r := <-done
			if r.err != nil {
				t.Fatalf("DialContextTCP(%s) = %v, want a connection served by %s", dst, r.err, tc.wantServer)
			}
			if got := readName(t, r.c); got != tc.wantServer {
				t.Errorf("connection served by %q, want %q", got, tc.wantServer)
			}
			got := map[string]map[string]uint64{}
			for _, s := range e.fwd.Stats() {
				m := map[string]uint64{}
				for name, v := range map[string]uint64{"redispatched": s.Redispatched, "proxied": s.Outcomes[dispatch.Proxied], "refused": s.Outcomes[dispatch.Refused], "dial_timeout": s.Outcomes[dispatch.DialTimeout]} {
					if v != 0 {
						m[name] = v
					}
				}
				if len(m) > 0 {
					got[s.Member] = m
				}
			}
			if diff := cmp.Diff(tc.wantStats, got); diff != "" {
				t.Errorf("Stats() (-want +got):\n%s", diff)
			}
			if reports, _ := obs.reports(); len(reports) != 0 {
				t.Errorf("Observer told %v, want nothing: the member was down already", reports)
			}
		})
	}
}

// TestDialScopeRenewed: a member that the table marked down (cutting its
// dials short) and then up again is dialled normally afterwards.
func TestDialScopeRenewed(t *testing.T) {
	port := registry.Key{IP: shared, Port: 8080}
	dst := netip.AddrPortFrom(shared, 8080)
	obs := observer{noFailover: true}
	e := newEnv(t, dispatch.Options{Observer: &obs})
	e.register(t, registry.Registration{Name: "A", IP: shared, Port: 8080, Backend: newBackend(t, namedEcho("A")).addr, State: registry.Active})
	e.register(t, registry.Registration{Name: "B", IP: shared, Port: 8080, Backend: newBackend(t, namedEcho("B")).addr, State: registry.Standby})

	if got := readName(t, e.mustDial(t, dst)); got != "A" {
		t.Fatalf("first connection served by %q, want A", got)
	}
	if err := e.reg.SetHealth(port, "A", false, "health check failed: test"); err != nil {
		t.Fatalf("SetHealth(A down): %v", err)
	}
	if got := readName(t, e.mustDial(t, dst)); got != "B" {
		t.Fatalf("connection after A's failover served by %q, want B", got)
	}
	if err := e.reg.SetHealth(port, "A", true, "health check passed"); err != nil {
		t.Fatalf("SetHealth(A up): %v", err)
	}
	if _, err := e.reg.Switch(port, "A"); err != nil {
		t.Fatalf("Switch(A): %v", err)
	}
	if got := readName(t, e.mustDial(t, dst)); got != "A" {
		t.Fatalf("connection after A came back and was switched to served by %q, want A", got)
	}
	if s, _ := statsOf(e.fwd, port, "A"); s.Redispatched != 0 || s.Outcomes[dispatch.Proxied] != 2 {
		t.Errorf("Stats() of A: redispatched %d, proxied %d; want 0 and 2", s.Redispatched, s.Outcomes[dispatch.Proxied])
	}
}

// BenchmarkConnectMode2 is BenchmarkConnect on a mode-2 port with an
// active and a standby member: the path whose dials derive from the
// member's dial scope.
func BenchmarkConnectMode2(b *testing.B) {
	e := newEnv(b, dispatch.Options{})
	e.register(b, registry.Registration{Name: "A", IP: shared, Port: 8080, Backend: newBackend(b, echo).addr, State: registry.Active})
	e.register(b, registry.Registration{Name: "B", IP: shared, Port: 8080, Backend: newBackend(b, echo).addr, State: registry.Standby})
	dst := netip.AddrPortFrom(shared, 8080)
	buf := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		c, err := e.dial(dst)
		if err != nil {
			b.Fatalf("DialContextTCP(%s): %v", dst, err)
		}
		if _, err := c.Write(buf); err != nil {
			b.Fatalf("Write: %v", err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatalf("ReadFull: %v", err)
		}
		c.Close()
	}
}

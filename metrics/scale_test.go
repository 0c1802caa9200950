package metrics

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// vipmuxSeries counts the vipmux_* series that one scrape of m returns.
func vipmuxSeries(t *testing.T, m *Metrics) int {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	n := 0
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "vipmux_") {
			n += len(mf.GetMetric())
		}
	}
	return n
}

// scaledGateway returns metrics over a table of n mode-1 IPs, each with a
// connection, and one mode-2 port with two members.
func scaledGateway(t *testing.T, n int, per string) *Metrics {
	t.Helper()
	r := newRegistry(t,
		registry.Registration{Name: "web-a", IP: shared, Port: 8080, Backend: be},
		registry.Registration{Name: "web-b", IP: shared, Port: 8080, Backend: be, State: registry.Standby})
	regs := make([]registry.Registration, n)
	conns := fakeConns{stats(registry.Key{IP: shared, Port: 8080}, "web-a", map[dispatch.Outcome]uint64{dispatch.Proxied: 1}, 0, 1, 1)}
	base := netip.MustParseAddr("198.18.16.0")
	ip := base
	for i := range n {
		ip = ip.Next()
		regs[i] = registry.Registration{Name: fmt.Sprintf("srv-%d", i), IP: ip, Backend: be}
		conns = append(conns, stats(registry.Key{IP: ip}, regs[i].Name, map[dispatch.Outcome]uint64{dispatch.Proxied: 2, dispatch.Refused: 1}, 1, 10, 20))
	}
	if _, err := r.RegisterBatch(regs); err != nil {
		t.Fatalf("RegisterBatch(%d mode-1 IPs): %v", n, err)
	}
	m, err := New(Options{Table: r, Conns: conns, Stack: &fakeStack{s: tcpip.Stats{}.FillIn()}, PerMember: per, Logger: discard})
	if err != nil {
		t.Fatalf("New(PerMember %q): %v", per, err)
	}
	return m
}

// TestPerMemberCardinality checks that per_member = "mode2" and "none"
// keep the number of series from growing with the number of mode-1 IPs,
// and that "all" does grow with them.
func TestPerMemberCardinality(t *testing.T) {
	tests := []struct {
		per         string
		wantBounded bool
	}{
		{PerMemberAll, false},
		{PerMemberMode2, true},
		{PerMemberNone, true},
	}
	for _, tc := range tests {
		t.Run(tc.per, func(t *testing.T) {
			small := vipmuxSeries(t, scaledGateway(t, 10, tc.per))
			large := vipmuxSeries(t, scaledGateway(t, 1000, tc.per))
			if tc.wantBounded && large != small {
				t.Errorf("per_member %q: %d series with 1,000 mode-1 IPs, %d with 10; want the same number", tc.per, large, small)
			}
			if tc.wantBounded && large > 100 {
				t.Errorf("per_member %q: %d series with 1,000 mode-1 IPs; want at most 100", tc.per, large)
			}
			if !tc.wantBounded && large < 1000*7 {
				t.Errorf("per_member %q: %d series with 1,000 mode-1 IPs; want one set (7) per member", tc.per, large)
			}
		})
	}
}

// TestPerMemberSums checks that the summed series add up the members'
// figures, and that the mode-2 members keep theirs under "mode2".
func TestPerMemberSums(t *testing.T) {
	tests := []struct {
		per  string
		want string
	}{
		{PerMemberMode2, `
# HELP vipmux_connections_accepted_total Client connections accepted and proxied to the member's backend.
# TYPE vipmux_connections_accepted_total counter
vipmux_connections_accepted_total{ip="",member="",port="*"} 6
vipmux_connections_accepted_total{ip="198.18.0.100",member="web-a",port="8080"} 1
# HELP vipmux_connections_active Proxied connections to the member that are open now.
# TYPE vipmux_connections_active gauge
vipmux_connections_active{ip="",member="",port="*"} 3
vipmux_connections_active{ip="198.18.0.100",member="web-a",port="8080"} 0
# HELP vipmux_member_active 1 if the mode-2 member is its binding's active member, else 0.
# TYPE vipmux_member_active gauge
vipmux_member_active{ip="198.18.0.100",member="web-a",port="8080"} 1
vipmux_member_active{ip="198.18.0.100",member="web-b",port="8080"} 0
`},
		{PerMemberNone, `
# HELP vipmux_connections_accepted_total Client connections accepted and proxied to the member's backend.
# TYPE vipmux_connections_accepted_total counter
vipmux_connections_accepted_total{ip="",member="",port=""} 7
# HELP vipmux_connections_active Proxied connections to the member that are open now.
# TYPE vipmux_connections_active gauge
vipmux_connections_active{ip="",member="",port=""} 3
`},
	}
	for _, tc := range tests {
		t.Run(tc.per, func(t *testing.T) {
			m := scaledGateway(t, 3, tc.per)
			if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(tc.want),
				"vipmux_connections_accepted_total", "vipmux_connections_active", "vipmux_member_active"); err != nil {
				t.Errorf("per_member %q: %v", tc.per, err)
			}
		})
	}
}

// TestNewRejectsPerMember checks that an unknown PerMember is an error.
func TestNewRejectsPerMember(t *testing.T) {
	_, err := New(Options{Table: newRegistry(t), PerMember: "mode1", Logger: discard})
	if err == nil || !strings.Contains(err.Error(), `"mode1"`) {
		t.Errorf("New(PerMember \"mode1\") = %v, want an error naming the value", err)
	}
}

// TestFailbackCountedApart checks that a failover and the failback that
// undoes it land in two counters, and neither in switches.
func TestFailbackCountedApart(t *testing.T) {
	k := registry.Key{IP: shared, Port: 8080}
	r, err := registry.New(registry.Options{Failback: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, reg := range []registry.Registration{
		{Name: "web-a", IP: shared, Port: 8080, Backend: be},
		{Name: "web-b", IP: shared, Port: 8080, Backend: be, State: registry.Standby},
	} {
		if _, err := r.Register(reg); err != nil {
			t.Fatalf("Register(%s): %v", reg.Name, err)
		}
	}
	m, err := New(Options{Table: r, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	r.Watch(m.Watch)
	if err := r.SetHealth(k, "web-a", false, "health check failed"); err != nil {
		t.Fatalf("SetHealth(web-a down): %v", err)
	}
	if err := r.SetHealth(k, "web-a", true, "health check passed"); err != nil {
		t.Fatalf("SetHealth(web-a up): %v", err)
	}
	want := `
# HELP vipmux_failbacks_total Automatic changes of a port's active member back to the recovered former active ([health] failback).
# TYPE vipmux_failbacks_total counter
vipmux_failbacks_total{ip="198.18.0.100",port="8080"} 1
# HELP vipmux_failovers_total Automatic changes of a port's active member to a standby: the active's health check failed or its lease ran out.
# TYPE vipmux_failovers_total counter
vipmux_failovers_total{ip="198.18.0.100",port="8080"} 1
# HELP vipmux_switches_total Changes of a port's active member by an operator's switch.
# TYPE vipmux_switches_total counter
vipmux_switches_total{ip="198.18.0.100",port="8080"} 0
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "vipmux_failbacks_total", "vipmux_failovers_total", "vipmux_switches_total"); err != nil {
		t.Errorf("after a failover and a failback: %v", err)
	}
}

// TestRecorder checks the histograms and the lease expiry counter, fed as
// the gateway feeds them: the registry's saves and events, and the dial
// and probe durations.
func TestRecorder(t *testing.T) {
	rec := NewRecorder()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r, err := registry.New(registry.Options{Store: &memStore{}, Now: clock, ObserveSave: rec.ObserveSave, OnEvent: rec.Event})
	if err != nil {
		t.Fatal(err)
	}
	for _, reg := range []registry.Registration{
		{Name: "web-a", IP: vip, Backend: be, TTL: time.Second},
		{Name: "web-b", IP: shared, Port: 8080, Backend: be, TTL: time.Second},
		{Name: "web-c", IP: shared, Port: 8080, Backend: be, State: registry.Standby},
	} {
		if _, err := r.Register(reg); err != nil {
			t.Fatalf("Register(%s): %v", reg.Name, err)
		}
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if n := r.Expire(); n != 2 {
		t.Fatalf("Expire() = %d, want 2", n)
	}
	rec.ObserveDial(2 * time.Millisecond)
	rec.ObserveDial(3 * time.Second)
	rec.ObserveProbe(time.Millisecond)
	m, err := New(Options{Table: r, Recorder: rec, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			if h := mt.GetHistogram(); h != nil {
				counts[mf.GetName()] = h.GetSampleCount()
			}
			if c := mt.GetCounter(); c != nil {
				counts[mf.GetName()] = uint64(c.GetValue())
			}
		}
	}
	for name, want := range map[string]uint64{
		"vipmux_backend_dial_duration_seconds": 2,
		"vipmux_health_check_duration_seconds": 1,
		// Three registrations and one expiry, each a save of its own.
		"vipmux_state_save_duration_seconds": 4,
		// web-a removed, web-b marked down.
		"vipmux_lease_expiries_total": 2,
	} {
		if got, ok := counts[name]; !ok || got != want {
			t.Errorf("%s = %d (present %v), want %d", name, got, ok, want)
		}
	}
}

// memStore keeps the last table saved.
type memStore struct{ t *registry.Table }

func (s *memStore) Load() (*registry.Table, error) { return s.t, nil }
func (s *memStore) Save(t *registry.Table) error   { s.t = t; return nil }

// TestBuildInfoAndReload checks vipmux_build_info and the reload gauges.
func TestBuildInfoAndReload(t *testing.T) {
	m, err := New(Options{Table: newRegistry(t), Version: "v1.2.3", Revision: "abc1234", Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for _, mf := range mfs {
		if mf.GetName() == "vipmux_build_info" {
			for _, lp := range mf.GetMetric()[0].GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
		}
	}
	if labels["version"] != "v1.2.3" || labels["revision"] != "abc1234" || !strings.HasPrefix(labels["goversion"], "go") {
		t.Errorf("vipmux_build_info labels = %v, want version v1.2.3, revision abc1234, goversion go...", labels)
	}
	ok := func() float64 { return testutil.ToFloat64(m.reload.ok) }
	at := func() float64 { return testutil.ToFloat64(m.reload.at) }
	if ok() != 1 || at() == 0 {
		t.Errorf("at start: successful %v, timestamp %v; want 1 and the start time", ok(), at())
	}
	m.Reloaded(fmt.Errorf("health.rise: bad"), time.Unix(2000, 0))
	if ok() != 0 || at() == 2000 {
		t.Errorf("after a refused reload: successful %v, timestamp %v; want 0 and the start time kept", ok(), at())
	}
	m.Reloaded(nil, time.Unix(3000, 0))
	if ok() != 1 || at() != 3000 {
		t.Errorf("after a reload: successful %v, timestamp %v; want 1 and 3000", ok(), at())
	}
}

// dadStack is a fakeStack that counts DAD conflicts.
type dadStack struct {
	fakeStack
	n uint64
}

func (d *dadStack) DADConflicts() uint64 { return d.n }

func TestDADConflicts(t *testing.T) {
	st := &dadStack{fakeStack: fakeStack{s: tcpip.Stats{}.FillIn()}, n: 2}
	want := `
# HELP vipmux_dad_conflicts_total Addresses refused because duplicate address detection (ARP probe, IPv6 DAD) found another host holding them on the front link.
# TYPE vipmux_dad_conflicts_total counter
vipmux_dad_conflicts_total 2
`
	if err := testutil.CollectAndCompare(newStackCollector(st), strings.NewReader(want), "vipmux_dad_conflicts_total"); err != nil {
		t.Errorf("CollectAndCompare: %v", err)
	}
}

// BenchmarkObserveDial is what the dial histogram adds to each backend
// dial: two clock reads and one histogram observation.
func BenchmarkObserveDial(b *testing.B) {
	rec := NewRecorder()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			start := time.Now()
			rec.ObserveDial(time.Since(start))
		}
	})
}

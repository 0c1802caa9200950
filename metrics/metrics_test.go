package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
	"gvisor.dev/gvisor/pkg/tcpip"
)

var (
	discard = slog.New(slog.DiscardHandler)
	vip     = netip.MustParseAddr("198.18.0.10")
	shared  = netip.MustParseAddr("198.18.0.100")
	be      = netip.MustParseAddrPort("198.19.0.2:8080")
)

// newRegistry returns an in-memory registry with regs registered.
func newRegistry(t testing.TB, regs ...registry.Registration) *registry.Registry {
	t.Helper()
	r, err := registry.New(registry.Options{AllowLoopbackBackends: true})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	for _, reg := range regs {
		if _, err := r.Register(reg); err != nil {
			t.Fatalf("Register(%+v): %v", reg, err)
		}
	}
	return r
}

// fakeConns returns fixed counters.
type fakeConns []dispatch.MemberStats

func (f fakeConns) Stats() []dispatch.MemberStats { return f }

// stats returns member counters with the given outcomes.
func stats(k registry.Key, member string, outcomes map[dispatch.Outcome]uint64, active int64, toBackend, toClient uint64) dispatch.MemberStats {
	s := dispatch.MemberStats{Binding: k, Member: member, Active: active, BytesToBackend: toBackend, BytesToClient: toClient}
	for o, n := range outcomes {
		s.Outcomes[o] = n
	}
	return s
}

func TestConnCollector(t *testing.T) {
	mode1 := registry.Key{IP: vip}
	port := registry.Key{IP: shared, Port: 8080}
	tests := []struct {
		name  string
		regs  []registry.Registration
		drain *registry.Registration // deregistered with a drain after regs
		conns fakeConns
		names []string // the metrics compared; nil means all six
		want  string
	}{
		{
			name:  "member in the table",
			regs:  []registry.Registration{{Name: "web-a", IP: vip, Backend: be}},
			conns: fakeConns{stats(mode1, "web-a", map[dispatch.Outcome]uint64{dispatch.Proxied: 5, dispatch.Refused: 2, dispatch.DialTimeout: 1, dispatch.HandshakeFailed: 3, dispatch.MaxConnections: 6, dispatch.SourceLimit: 8}, 4, 1000, 20)},
			want: `
# HELP vipmux_connections_accepted_total Client connections accepted and proxied to the member's backend.
# TYPE vipmux_connections_accepted_total counter
vipmux_connections_accepted_total{ip="198.18.0.10",member="web-a",port="*"} 5
# HELP vipmux_connections_active Proxied connections to the member that are open now.
# TYPE vipmux_connections_active gauge
vipmux_connections_active{ip="198.18.0.10",member="web-a",port="*"} 4
# HELP vipmux_connections_handshake_failed_total Client connections whose handshake did not complete: the client went away, or did not answer within [dispatch] handshake_timeout.
# TYPE vipmux_connections_handshake_failed_total counter
vipmux_connections_handshake_failed_total{ip="198.18.0.10",member="web-a",port="*"} 3
# HELP vipmux_connections_refused_total Client connections answered with RST, by reason: no_active_member (member=""), backend_refused, dial_timeout, max_connections.
# TYPE vipmux_connections_refused_total counter
vipmux_connections_refused_total{ip="198.18.0.10",member="web-a",port="*",reason="backend_refused"} 2
vipmux_connections_refused_total{ip="198.18.0.10",member="web-a",port="*",reason="dial_timeout"} 1
vipmux_connections_refused_total{ip="198.18.0.10",member="web-a",port="*",reason="max_connections"} 6
# HELP vipmux_connections_dropped_total Client SYNs dropped without an answer (the client retransmits), by reason: source_limit (max_in_flight_per_source).
# TYPE vipmux_connections_dropped_total counter
vipmux_connections_dropped_total{ip="198.18.0.10",member="web-a",port="*",reason="source_limit"} 8
# HELP vipmux_connections_receive_bytes_total Bytes received from clients and proxied to the member's backend.
# TYPE vipmux_connections_receive_bytes_total counter
vipmux_connections_receive_bytes_total{ip="198.18.0.10",member="web-a",port="*"} 1000
# HELP vipmux_connections_transmit_bytes_total Bytes received from the member's backend and transmitted to clients.
# TYPE vipmux_connections_transmit_bytes_total counter
vipmux_connections_transmit_bytes_total{ip="198.18.0.10",member="web-a",port="*"} 20
`,
		},
		{
			name: "redispatched from a mode-2 member",
			regs: []registry.Registration{
				{Name: "web-a", IP: shared, Port: 8080, Backend: be},
				{Name: "web-b", IP: shared, Port: 8080, Backend: be, State: registry.Standby},
			},
			conns: fakeConns{
				func() dispatch.MemberStats {
					s := stats(port, "web-a", map[dispatch.Outcome]uint64{dispatch.Proxied: 5}, 0, 0, 0)
					s.Redispatched = 3
					return s
				}(),
				stats(port, "web-b", map[dispatch.Outcome]uint64{dispatch.Proxied: 3}, 0, 0, 0),
			},
			names: []string{"vipmux_connections_accepted_total", "vipmux_connections_redispatched_total"},
			want: `
# HELP vipmux_connections_accepted_total Client connections accepted and proxied to the member's backend.
# TYPE vipmux_connections_accepted_total counter
vipmux_connections_accepted_total{ip="198.18.0.100",member="web-a",port="8080"} 5
vipmux_connections_accepted_total{ip="198.18.0.100",member="web-b",port="8080"} 3
# HELP vipmux_connections_redispatched_total Client connections whose dial to the member's backend failed and that were dialled to the binding's next healthy member instead, before their handshake completed (mode 2 only).
# TYPE vipmux_connections_redispatched_total counter
vipmux_connections_redispatched_total{ip="198.18.0.100",member="web-a",port="8080"} 3
vipmux_connections_redispatched_total{ip="198.18.0.100",member="web-b",port="8080"} 0
`,
		},
		{
			name:  "no active member",
			regs:  []registry.Registration{{Name: "web-b", IP: shared, Port: 8080, Backend: be, State: registry.Standby}},
			conns: fakeConns{stats(port, "", map[dispatch.Outcome]uint64{dispatch.NoRoute: 7}, 0, 0, 0)},
			want: `
# HELP vipmux_connections_refused_total Client connections answered with RST, by reason: no_active_member (member=""), backend_refused, dial_timeout, max_connections.
# TYPE vipmux_connections_refused_total counter
vipmux_connections_refused_total{ip="198.18.0.100",member="",port="8080",reason="no_active_member"} 7
`,
		},
		{
			name:  "member gone from the table",
			regs:  []registry.Registration{{Name: "web-b", IP: shared, Port: 8080, Backend: be}},
			conns: fakeConns{stats(port, "web-a", map[dispatch.Outcome]uint64{dispatch.Proxied: 5}, 0, 10, 10)},
			want:  ``,
		},
		{
			name:  "draining member",
			regs:  []registry.Registration{{Name: "web-a", IP: vip, Backend: be}},
			drain: &registry.Registration{Name: "web-a", IP: vip},
			conns: fakeConns{stats(mode1, "web-a", map[dispatch.Outcome]uint64{dispatch.Proxied: 1}, 1, 3, 4)},
			names: []string{"vipmux_connections_accepted_total", "vipmux_connections_active"},
			want: `
# HELP vipmux_connections_accepted_total Client connections accepted and proxied to the member's backend.
# TYPE vipmux_connections_accepted_total counter
vipmux_connections_accepted_total{ip="198.18.0.10",member="web-a",port="*"} 1
# HELP vipmux_connections_active Proxied connections to the member that are open now.
# TYPE vipmux_connections_active gauge
vipmux_connections_active{ip="198.18.0.10",member="web-a",port="*"} 1
`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := newRegistry(t, tc.regs...)
			if tc.drain != nil {
				if err := reg.DeregisterDrain(tc.drain.Name, registry.Key{IP: tc.drain.IP, Port: tc.drain.Port}, time.Minute); err != nil {
					t.Fatalf("DeregisterDrain: %v", err)
				}
			}
			c := newConnCollector(reg, tc.conns, PerMemberAll)
			names := tc.names
			if names == nil {
				names = []string{"vipmux_connections_accepted_total", "vipmux_connections_active", "vipmux_connections_refused_total", "vipmux_connections_dropped_total",
					"vipmux_connections_redispatched_total", "vipmux_connections_handshake_failed_total",
					"vipmux_connections_receive_bytes_total", "vipmux_connections_transmit_bytes_total"}
			}
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want), names...); err != nil {
				t.Errorf("CollectAndCompare: %v", err)
			}
		})
	}
}

func TestChanges(t *testing.T) {
	k := registry.Key{IP: shared, Port: 8080}
	tests := []struct {
		name string
		// change is applied to a registry with web-a active and web-b
		// standby on k.
		change func(t *testing.T, r *registry.Registry)
		want   []Change
	}{
		{"switch", func(t *testing.T, r *registry.Registry) {
			if _, err := r.Switch(k, "web-b"); err != nil {
				t.Fatalf("Switch: %v", err)
			}
		}, []Change{{Key: k, From: "web-a", To: "web-b", Cause: CauseSwitch, Why: "switch"}}},
		{"failover", func(t *testing.T, r *registry.Registry) {
			if err := r.SetHealth(k, "web-a", false, "health check failed: refused"); err != nil {
				t.Fatalf("SetHealth: %v", err)
			}
		}, []Change{{Key: k, From: "web-a", To: "web-b", Cause: CauseFailover, Why: "automatic failover: web-a health check failed: refused"}}},
		{"failover and failback", func(t *testing.T, r *registry.Registry) {
			r.SetFailback(true)
			if err := r.SetHealth(k, "web-a", false, "health check failed: refused"); err != nil {
				t.Fatalf("SetHealth(down): %v", err)
			}
			if err := r.SetHealth(k, "web-a", true, "health check passed"); err != nil {
				t.Fatalf("SetHealth(up): %v", err)
			}
		}, []Change{
			{Key: k, From: "web-a", To: "web-b", Cause: CauseFailover, Why: "automatic failover: web-a health check failed: refused"},
			{Key: k, From: "web-b", To: "web-a", Cause: CauseFailback, Why: "failback: health check passed"},
		}},
		{"switch to the active", func(t *testing.T, r *registry.Registry) {
			if _, err := r.Switch(k, "web-a"); err != nil {
				t.Fatalf("Switch: %v", err)
			}
		}, nil},
		{"deregister the active", func(t *testing.T, r *registry.Registry) {
			if err := r.Deregister("web-a", k); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
		}, nil},
		{"standby down", func(t *testing.T, r *registry.Registry) {
			if err := r.SetHealth(k, "web-b", false, "health check failed"); err != nil {
				t.Fatalf("SetHealth: %v", err)
			}
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRegistry(t,
				registry.Registration{Name: "web-a", IP: shared, Port: 8080, Backend: be, State: registry.Active},
				registry.Registration{Name: "web-b", IP: shared, Port: 8080, Backend: be, State: registry.Standby})
			var got []Change
			r.Watch(func(prev, next *registry.Table) { got = append(got, Changes(prev, next)...) })
			tc.change(t, r)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Changes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTableCollector(t *testing.T) {
	k := registry.Key{IP: shared, Port: 8080}
	r := newRegistry(t,
		registry.Registration{Name: "web-a", IP: vip, Backend: be},
		registry.Registration{Name: "web-a", IP: shared, Port: 8080, Backend: be, State: registry.Active},
		registry.Registration{Name: "web-b", IP: shared, Port: 8080, Backend: be, State: registry.Standby})
	var logged strings.Builder
	m, err := New(Options{Table: r, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.Watch(m.Watch)
	for _, to := range []string{"web-b", "web-a", "web-b"} {
		if _, err := r.Switch(k, to); err != nil {
			t.Fatalf("Switch(%s): %v", to, err)
		}
	}
	if err := r.SetHealth(k, "web-b", false, "health check failed: refused"); err != nil {
		t.Fatalf("SetHealth: %v", err)
	}
	want := `
# HELP vipmux_bindings Bindings (ip, port) in the table.
# TYPE vipmux_bindings gauge
vipmux_bindings 2
# HELP vipmux_failbacks_total Automatic changes of a port's active member back to the recovered former active ([health] failback).
# TYPE vipmux_failbacks_total counter
vipmux_failbacks_total{ip="198.18.0.100",port="8080"} 0
# HELP vipmux_failovers_total Automatic changes of a port's active member to a standby: the active's health check failed or its lease ran out.
# TYPE vipmux_failovers_total counter
vipmux_failovers_total{ip="198.18.0.100",port="8080"} 1
# HELP vipmux_member_active 1 if the mode-2 member is its binding's active member, else 0.
# TYPE vipmux_member_active gauge
vipmux_member_active{ip="198.18.0.100",member="web-a",port="8080"} 1
vipmux_member_active{ip="198.18.0.100",member="web-b",port="8080"} 0
# HELP vipmux_member_up 1 unless the mode-2 member's health check or lease declared it down.
# TYPE vipmux_member_up gauge
vipmux_member_up{ip="198.18.0.100",member="web-a",port="8080"} 1
vipmux_member_up{ip="198.18.0.100",member="web-b",port="8080"} 0
# HELP vipmux_switches_total Changes of a port's active member by an operator's switch.
# TYPE vipmux_switches_total counter
vipmux_switches_total{ip="198.18.0.100",port="8080"} 3
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want),
		"vipmux_bindings", "vipmux_failbacks_total", "vipmux_failovers_total", "vipmux_member_active", "vipmux_member_up", "vipmux_switches_total"); err != nil {
		t.Errorf("after 3 switches and a failover: %v", err)
	}
	if n := strings.Count(logged.String(), "active member changed"); n != 4 {
		t.Errorf("logged %d \"active member changed\" lines, want 4:\n%s", n, logged.String())
	}
	// A switch is information, a failover a warning.
	for _, want := range []string{`level=INFO msg="active member changed"`, `level=WARN msg="active member changed"`} {
		cause := "cause=switch"
		if strings.Contains(want, "WARN") {
			cause = "cause=failover"
		}
		n := 0
		for _, line := range strings.Split(logged.String(), "\n") {
			if strings.Contains(line, want) && strings.Contains(line, cause) {
				n++
			}
		}
		if wantN := map[string]int{"cause=switch": 3, "cause=failover": 1}[cause]; n != wantN {
			t.Errorf("log has %d lines with %s and %s, want %d:\n%s", n, want, cause, wantN, logged.String())
		}
	}

	// A binding that goes takes its counts with it; it starts from zero
	// when it comes back.
	for _, name := range []string{"web-a", "web-b"} {
		if err := r.Deregister(name, k); err != nil {
			t.Fatalf("Deregister(%s): %v", name, err)
		}
	}
	if _, err := r.Register(registry.Registration{Name: "web-c", IP: shared, Port: 8080, Backend: be}); err != nil {
		t.Fatalf("Register(web-c): %v", err)
	}
	want = `
# HELP vipmux_switches_total Changes of a port's active member by an operator's switch.
# TYPE vipmux_switches_total counter
vipmux_switches_total{ip="198.18.0.100",port="8080"} 0
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "vipmux_switches_total"); err != nil {
		t.Errorf("after the binding went and came back: %v", err)
	}
}

// fakeStack returns fixed statistics.
type fakeStack struct{ s tcpip.Stats }

func (f *fakeStack) Stats() tcpip.Stats { return f.s }

func TestStackCollector(t *testing.T) {
	tests := []struct {
		name   string
		bump   func(s *tcpip.Stats)
		metric string
		want   string
	}{
		{"arp answered", func(s *tcpip.Stats) {
			s.ARP.OutgoingRepliesSent.IncrementBy(3)
		}, "vipmux_stack_arp_transmit_replies_total", `
# HELP vipmux_stack_arp_transmit_replies_total ARP requests answered: replies sent for addresses that the gateway holds.
# TYPE vipmux_stack_arp_transmit_replies_total counter
vipmux_stack_arp_transmit_replies_total 3
`},
		{"packets in", func(s *tcpip.Stats) {
			s.NICs.Rx.Packets.IncrementBy(42)
		}, "vipmux_stack_receive_packets_total", `
# HELP vipmux_stack_receive_packets_total Frames that the front NIC received (gVisor NIC Rx.Packets).
# TYPE vipmux_stack_receive_packets_total counter
vipmux_stack_receive_packets_total 42
`},
		{"packets out", func(s *tcpip.Stats) {
			s.NICs.Tx.Packets.IncrementBy(7)
		}, "vipmux_stack_transmit_packets_total", `
# HELP vipmux_stack_transmit_packets_total Frames that the front NIC sent (gVisor NIC Tx.Packets).
# TYPE vipmux_stack_transmit_packets_total counter
vipmux_stack_transmit_packets_total 7
`},
		{"established", func(s *tcpip.Stats) {
			s.TCP.CurrentEstablished.IncrementBy(2)
		}, "vipmux_stack_tcp_established", `
# HELP vipmux_stack_tcp_established TCP connections of the stack in state ESTABLISHED (client side of proxied connections).
# TYPE vipmux_stack_tcp_established gauge
vipmux_stack_tcp_established 2
`},
		{"drops", func(s *tcpip.Stats) {
			s.IP.InvalidDestinationAddressesReceived.IncrementBy(5)
			s.TCP.ForwardMaxInFlightDrop.IncrementBy(9)
		}, "vipmux_stack_dropped_packets_total", `
# HELP vipmux_stack_dropped_packets_total Packets that the stack dropped, by reason (one gVisor counter each).
# TYPE vipmux_stack_dropped_packets_total counter
vipmux_stack_dropped_packets_total{reason="arp_malformed"} 0
vipmux_stack_dropped_packets_total{reason="ip_invalid_destination"} 5
vipmux_stack_dropped_packets_total{reason="ip_invalid_source"} 0
vipmux_stack_dropped_packets_total{reason="ip_malformed"} 0
vipmux_stack_dropped_packets_total{reason="ip_send_error"} 0
vipmux_stack_dropped_packets_total{reason="l4_malformed"} 0
vipmux_stack_dropped_packets_total{reason="tcp_checksum"} 0
vipmux_stack_dropped_packets_total{reason="tcp_invalid_segment"} 0
vipmux_stack_dropped_packets_total{reason="tcp_max_in_flight"} 9
vipmux_stack_dropped_packets_total{reason="transport"} 0
vipmux_stack_dropped_packets_total{reason="tx_no_buffer_space"} 0
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeStack{s: tcpip.Stats{}.FillIn()}
			tc.bump(&st.s)
			if err := testutil.CollectAndCompare(newStackCollector(st), strings.NewReader(tc.want), tc.metric); err != nil {
				t.Errorf("CollectAndCompare: %v", err)
			}
		})
	}
}

// TestHandler checks the HTTP side: the text format with vipmux's, Go's
// and the process's metrics, and that every collector passes the
// registry's consistency checks.
func TestHandler(t *testing.T) {
	r := newRegistry(t, registry.Registration{Name: "web-a", IP: vip, Backend: be})
	m, err := New(Options{
		Table:  r,
		Conns:  fakeConns{stats(registry.Key{IP: vip}, "web-a", map[dispatch.Outcome]uint64{dispatch.Proxied: 1}, 0, 1, 1)},
		Stack:  &fakeStack{s: tcpip.Stats{}.FillIn()},
		Logger: discard,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if problems, err := testutil.GatherAndLint(m.Gatherer()); err != nil || len(problems) > 0 {
		t.Errorf("GatherAndLint = %v, %v; want no problems", problems, err)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET = %d %q, want 200 text/plain", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`vipmux_connections_accepted_total{ip="198.18.0.10",member="web-a",port="*"} 1`,
		"vipmux_stack_receive_packets_total 0",
		"vipmux_bindings 1",
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("GET body has no %q", want)
		}
	}
}

func TestNewRequires(t *testing.T) {
	r := newRegistry(t)
	for _, opts := range []Options{{Logger: discard}, {Table: r}} {
		if _, err := New(opts); err == nil {
			t.Errorf("New(%+v) = nil error, want one naming the missing option", opts)
		}
	}
}

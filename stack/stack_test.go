package stack_test

import (
	"bytes"
	"errors"
	"github.com/vipmux/vipmux/internal/leakcheck"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	// nicMAC is the stack's link address on the fake wire.
	nicMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	// peerMAC is the link address of the fake client that asks.
	peerMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
)

var (
	frontNet = netip.MustParsePrefix("198.18.0.0/24")
	peerIP   = netip.MustParseAddr("198.18.0.1")
)

var discard = slog.New(slog.DiscardHandler)

// newStack returns a stack on 198.18.0.0/24 over a fake Ethernet wire (a
// channel endpoint that the test writes frames into and reads frames from),
// closed in cleanup.
func newStack(t testing.TB, static ...netip.Addr) (*stack.Stack, *channel.Endpoint) {
	t.Helper()
	return newStackOpts(t, func(o *stack.Options) { o.Static = static })
}

// newStackOpts is newStack with the options that set changes (from a stack
// on frontNet with nothing else set).
func newStackOpts(t testing.TB, set func(*stack.Options)) (*stack.Stack, *channel.Endpoint) {
	t.Helper()
	leakcheck.Goroutines(t)
	wire := channel.New(64, 1500, nicMAC)
	// ethernet.New frames packets as the real front link (fdbased with
	// EthernetHeader) does and advertises CapabilityResolutionRequired, so
	// that the NIC resolves and answers ARP.
	opts := stack.Options{
		Link:     ethernet.New(wire),
		Networks: []netip.Prefix{frontNet},
		Logger:   discard,
	}
	set(&opts)
	st, err := stack.New(opts)
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { wire.Drain() })
	t.Cleanup(st.Close)
	return st, wire
}

// table returns a registry table with a mode-1 binding on each address. The
// registry has no networks, so the table may hold addresses that the stack
// must refuse.
func table(t testing.TB, addrs ...netip.Addr) *registry.Table {
	t.Helper()
	r, err := registry.New(registry.Options{AllowLoopbackBackends: true})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	for _, a := range addrs {
		reg := registry.Registration{Name: "srv", IP: a, Backend: netip.MustParseAddrPort("127.0.0.1:9")}
		if _, err := r.Register(reg); err != nil {
			t.Fatalf("Register(%+v): %v", reg, err)
		}
	}
	return r.Table()
}

// arpRequest returns an Ethernet broadcast frame in which peerIP asks who
// has target.
func arpRequest(target netip.Addr) *gstack.PacketBuffer {
	b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(b).Encode(&header.EthernetFields{
		SrcAddr: peerMAC,
		DstAddr: header.EthernetBroadcastAddress,
		Type:    header.ARPProtocolNumber,
	})
	a := header.ARP(b[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), peerMAC)
	copy(a.ProtocolAddressSender(), peerIP.AsSlice())
	copy(a.ProtocolAddressTarget(), target.AsSlice())
	return gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

// whoHas sends an ARP request for target on the wire and reports whether
// the stack answered it with a well-formed reply from nicMAC to peerMAC.
// gVisor handles ARP on the injecting goroutine, so any reply is queued on
// the wire by the time InjectInbound returns.
func whoHas(t testing.TB, wire *channel.Endpoint, target netip.Addr) bool {
	t.Helper()
	req := arpRequest(target)
	wire.InjectInbound(header.ARPProtocolNumber, req)
	req.DecRef()
	answered := false
	for pkt := wire.Read(); pkt != nil; pkt = wire.Read() {
		v := pkt.ToView()
		frame := v.AsSlice()
		if len(frame) >= header.EthernetMinimumSize+header.ARPSize && header.Ethernet(frame).Type() == header.ARPProtocolNumber {
			eth := header.Ethernet(frame)
			a := header.ARP(frame[header.EthernetMinimumSize:])
			if a.IsValid() && a.Op() == header.ARPReply && bytes.Equal(a.ProtocolAddressSender(), target.AsSlice()) {
				answered = true
				if got := (arpReply{eth.SourceAddress(), eth.DestinationAddress(), tcpip.LinkAddress(a.HardwareAddressSender()), tcpip.LinkAddress(a.HardwareAddressTarget()), netip.AddrFrom4([4]byte(a.ProtocolAddressTarget()))}); got != wantReply {
					t.Errorf("ARP reply for %s = %+v, want %+v", target, got, wantReply)
				}
			}
		}
		v.Release()
		pkt.DecRef()
	}
	return answered
}

// arpReply is what matters of an ARP reply frame.
type arpReply struct {
	EthSrc, EthDst tcpip.LinkAddress
	Sender, Target tcpip.LinkAddress
	TargetIP       netip.Addr
}

var wantReply = arpReply{EthSrc: nicMAC, EthDst: peerMAC, Sender: nicMAC, Target: peerMAC, TargetIP: peerIP}

// answers probes each address with ARP and returns which ones the stack
// answered.
func answers(t testing.TB, wire *channel.Endpoint, addrs ...netip.Addr) map[netip.Addr]bool {
	t.Helper()
	out := map[netip.Addr]bool{}
	for _, a := range addrs {
		out[a] = whoHas(t, wire, a)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestApply(t *testing.T) {
	type step struct {
		prev, next []netip.Addr
		wantErr    error
		wantAddrs  []netip.Addr
		// wantARP maps every probed address to whether the stack answers.
		wantARP map[netip.Addr]bool
	}
	var (
		a10  = netip.MustParseAddr("198.18.0.10")
		a11  = netip.MustParseAddr("198.18.0.11")
		a12  = netip.MustParseAddr("198.18.0.12")
		a100 = netip.MustParseAddr("198.18.0.100")
		out  = netip.MustParseAddr("203.0.113.5")
	)
	tests := []struct {
		name   string
		static []netip.Addr
		steps  []step
	}{
		{
			name: "add then remove",
			steps: []step{
				{next: []netip.Addr{a10}, wantAddrs: []netip.Addr{a10}, wantARP: map[netip.Addr]bool{a10: true, a11: false}},
				{prev: []netip.Addr{a10}, wantARP: map[netip.Addr]bool{a10: false, a11: false}},
			},
		},
		{
			name: "replace",
			steps: []step{
				{next: []netip.Addr{a10, a11}, wantAddrs: []netip.Addr{a10, a11}, wantARP: map[netip.Addr]bool{a10: true, a11: true, a12: false}},
				{prev: []netip.Addr{a10, a11}, next: []netip.Addr{a11, a12}, wantAddrs: []netip.Addr{a11, a12}, wantARP: map[netip.Addr]bool{a10: false, a11: true, a12: true}},
			},
		},
		{
			name:   "static always answered",
			static: []netip.Addr{a100},
			steps: []step{
				{wantAddrs: []netip.Addr{a100}, wantARP: map[netip.Addr]bool{a100: true, a10: false}},
				{next: []netip.Addr{a10, a100}, wantAddrs: []netip.Addr{a10, a100}, wantARP: map[netip.Addr]bool{a100: true, a10: true}},
				{prev: []netip.Addr{a10, a100}, wantAddrs: []netip.Addr{a100}, wantARP: map[netip.Addr]bool{a100: true, a10: false}},
			},
		},
		{
			// The failing add may come after in-network adds (map order):
			// those must be rolled back, and nothing removed.
			name: "outside networks leaves held set unchanged",
			steps: []step{
				{next: []netip.Addr{a10}, wantAddrs: []netip.Addr{a10}, wantARP: map[netip.Addr]bool{a10: true}},
				{prev: []netip.Addr{a10}, next: []netip.Addr{a11, a12, out}, wantErr: stack.ErrNotInNetworks, wantAddrs: []netip.Addr{a10}, wantARP: map[netip.Addr]bool{a10: true, a11: false, a12: false, out: false}},
				{prev: []netip.Addr{a10}, next: []netip.Addr{a11}, wantAddrs: []netip.Addr{a11}, wantARP: map[netip.Addr]bool{a10: false, a11: true}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, wire := newStack(t, tc.static...)
			for i, s := range tc.steps {
				prev, next := table(t, s.prev...), table(t, s.next...)
				err := st.Prepare(prev, next)
				if err == nil {
					st.Commit(prev, next)
				}
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d: Prepare+Commit(%v, %v) = %v, want %v", i, s.prev, s.next, err, s.wantErr)
				}
				if diff := cmp.Diff(s.wantAddrs, st.Addrs(), cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
					t.Errorf("step %d: Addrs() after Prepare+Commit(%v, %v) (-want +got):\n%s", i, s.prev, s.next, diff)
				}
				probe := make([]netip.Addr, 0, len(s.wantARP))
				for a := range s.wantARP {
					probe = append(probe, a)
				}
				if diff := cmp.Diff(s.wantARP, answers(t, wire, probe...), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
					t.Errorf("step %d: ARP answered after Prepare+Commit(%v, %v) (-want +got):\n%s", i, s.prev, s.next, diff)
				}
			}
		})
	}
}

// TestRegistryApplier drives the stack through a real registry: the table
// restored before SetApplier is applied, Register and Deregister add and
// remove addresses, and an address that the stack refuses aborts the
// registration with the stack's error and leaves both unchanged.
func TestRegistryApplier(t *testing.T) {
	st, wire := newStack(t)
	var (
		a10 = netip.MustParseAddr("198.18.0.10")
		a11 = netip.MustParseAddr("198.18.0.11")
		out = netip.MustParseAddr("203.0.113.5")
		be  = netip.MustParseAddrPort("127.0.0.1:9")
	)
	r, err := registry.New(registry.Options{AllowLoopbackBackends: true}) // any IP: the stack must refuse out
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	if _, err := r.Register(registry.Registration{Name: "a", IP: a10, Backend: be}); err != nil {
		t.Fatalf("Register(a on %s) before SetApplier: %v", a10, err)
	}
	if got := answers(t, wire, a10); got[a10] {
		t.Fatalf("ARP for %s answered before SetApplier, want silence", a10)
	}
	if err := r.SetApplier(st); err != nil {
		t.Fatalf("SetApplier: %v", err)
	}

	steps := []struct {
		name      string
		do        func() error
		wantErr   error
		wantAddrs []netip.Addr
		wantARP   map[netip.Addr]bool
	}{
		{
			name:      "restored",
			do:        func() error { return nil },
			wantAddrs: []netip.Addr{a10},
			wantARP:   map[netip.Addr]bool{a10: true, a11: false},
		},
		{
			name: "register",
			do: func() error {
				_, err := r.Register(registry.Registration{Name: "b", IP: a11, Port: 80, Backend: be})
				return err
			},
			wantAddrs: []netip.Addr{a10, a11},
			wantARP:   map[netip.Addr]bool{a10: true, a11: true},
		},
		{
			name: "register outside networks",
			do: func() error {
				_, err := r.Register(registry.Registration{Name: "c", IP: out, Backend: be})
				return err
			},
			wantErr:   stack.ErrNotInNetworks,
			wantAddrs: []netip.Addr{a10, a11},
			wantARP:   map[netip.Addr]bool{a10: true, a11: true, out: false},
		},
		{
			name:      "deregister",
			do:        func() error { return r.Deregister("a", registry.Key{IP: a10}) },
			wantAddrs: []netip.Addr{a11},
			wantARP:   map[netip.Addr]bool{a10: false, a11: true},
		},
		{
			name:    "deregister last",
			do:      func() error { return r.Deregister("b", registry.Key{IP: a11, Port: 80}) },
			wantARP: map[netip.Addr]bool{a10: false, a11: false},
		},
	}
	for _, s := range steps {
		if err := s.do(); !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
		if diff := cmp.Diff(s.wantAddrs, st.Addrs(), cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("%s: Addrs() (-want +got):\n%s", s.name, diff)
		}
		var tableAddrs []netip.Addr
		for a := range r.Table().Addrs() {
			tableAddrs = append(tableAddrs, a)
		}
		if diff := cmp.Diff(s.wantAddrs, tableAddrs, cmpopts.EquateEmpty(), cmpopts.SortSlices(netip.Addr.Less), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("%s: registry table addresses (-want +got):\n%s", s.name, diff)
		}
		probe := make([]netip.Addr, 0, len(s.wantARP))
		for a := range s.wantARP {
			probe = append(probe, a)
		}
		if diff := cmp.Diff(s.wantARP, answers(t, wire, probe...), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("%s: ARP answered (-want +got):\n%s", s.name, diff)
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		opts    func(*stack.Options)
		wantErr error // nil: any error
	}{
		{name: "no link", opts: func(o *stack.Options) { o.Link = nil }},
		{name: "no logger", opts: func(o *stack.Options) { o.Logger = nil }},
		{name: "no networks", opts: func(o *stack.Options) { o.Networks = nil }},
		{name: "static outside networks", opts: func(o *stack.Options) { o.Static = addrs("198.18.0.100", "203.0.113.5") }, wantErr: stack.ErrNotInNetworks},
		{name: "negative GARPCount", opts: func(o *stack.Options) { o.GARPCount = -1 }},
		{name: "GARPCount without interval", opts: func(o *stack.Options) { o.GARPCount = 3 }},
		{name: "DADProbes too many", opts: func(o *stack.Options) { o.DADProbes, o.DADInterval = 256, time.Millisecond }},
		{name: "DADProbes without interval", opts: func(o *stack.Options) { o.DADProbes = 2 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Goroutines(t)
			opts := stack.Options{
				Link:     ethernet.New(channel.New(4, 1500, nicMAC)),
				Networks: []netip.Prefix{frontNet},
				Logger:   discard,
			}
			tc.opts(&opts)
			st, err := stack.New(opts)
			if err == nil {
				st.Close()
				t.Fatalf("stack.New(%s) = nil error, want an error", tc.name)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("stack.New(%s) = %v, want %v", tc.name, err, tc.wantErr)
			}
		})
	}
}

// TestCloseIdempotent checks that a second Close returns at once.
func TestCloseIdempotent(t *testing.T) {
	st, _ := newStack(t, netip.MustParseAddr("198.18.0.100"))
	st.Close()
	done := make(chan struct{})
	go func() { st.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("second Close did not return within 5s")
	}
}

// prepareAndCheck runs Prepare(+add) from an empty table, Commit when that
// succeeds, then stop (the fake host on the wire), and checks the outcome:
// success, taking at least minTook, when wantConflict is empty; otherwise a
// *stack.ConflictError whose message is wantConflict, matching
// stack.ErrAddressInUse and registry.ErrConflict, whose Field is "ip" (the
// field the control API names). It returns
// Prepare's error.
func prepareAndCheck(t *testing.T, st *stack.Stack, add []netip.Addr, stop func(), wantConflict string, minTook time.Duration) error {
	t.Helper()
	prev, next := table(t), table(t, add...)
	start := time.Now()
	err := st.Prepare(prev, next)
	took := time.Since(start)
	if err == nil {
		st.Commit(prev, next)
	}
	stop()
	if wantConflict == "" {
		if err != nil {
			t.Fatalf("Prepare(+%v) = %v, want success", add, err)
		}
		if took < minTook {
			t.Errorf("Prepare(+%v) took %v, want >= %v (DADProbes x DADInterval)", add, took, minTook)
		}
		return nil
	}
	var ce *stack.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("Prepare(+%v) = %v (%T), want a *stack.ConflictError", add, err, err)
	}
	if ce.Error() != wantConflict {
		t.Errorf("Prepare(+%v) = %q, want %q", add, ce.Error(), wantConflict)
	}
	for _, target := range []error{stack.ErrAddressInUse, registry.ErrConflict} {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(Prepare(+%v) = %v, %v) = false, want true", add, err, target)
		}
	}
	var fn interface{ Field() string }
	if !errors.As(err, &fn) || fn.Field() != "ip" {
		t.Fatalf("Prepare(+%v) = %v: no field namer of \"ip\" (the API names the field)", add, err)
	}
	return err
}

package stack_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// IPv6 on the front link: NDP answers, unsolicited Neighbor Advertisements
// and NDP duplicate address detection, on a fake wire as in arp_test.go.

var (
	frontNet6 = netip.MustParsePrefix("2001:db8:18::/64")
	peerIP6   = netip.MustParseAddr("2001:db8:18::1")
	// allNodesMAC is the Ethernet group of ff02::1.
	allNodesMAC = tcpip.LinkAddress("\x33\x33\x00\x00\x00\x01")
)

// newStack6 returns a stack on frontNet (IPv4) and frontNet6 over a fake
// wire; set changes the options further.
func newStack6(t testing.TB, set func(*stack.Options)) (*stack.Stack, *channel.Endpoint) {
	t.Helper()
	return newStackOpts(t, func(o *stack.Options) {
		o.Networks = []netip.Prefix{frontNet, frontNet6}
		if set != nil {
			set(o)
		}
	})
}

// ndpFrame is what matters of an NDP Neighbor Solicitation or Advertisement
// on the wire.
type ndpFrame struct {
	EthSrc, EthDst tcpip.LinkAddress
	Src, Dst       netip.Addr
	HopLimit       uint8
	Type           header.ICMPv6Type
	Target         netip.Addr
	// Flags of an advertisement.
	Router, Solicited, Override bool
	// LinkAddr is the source (solicitation) or target (advertisement)
	// link-layer address option; empty when there is none.
	LinkAddr tcpip.LinkAddress
	// ChecksumOK reports a valid ICMPv6 checksum.
	ChecksumOK bool
}

// parseNDP returns the NS or NA in pkt, if it is one.
func parseNDP(pkt *gstack.PacketBuffer) (ndpFrame, bool) {
	v := pkt.ToView()
	defer v.Release()
	return parseNDPBytes(v.AsSlice())
}

func parseNDPBytes(frame []byte) (ndpFrame, bool) {
	if len(frame) < header.EthernetMinimumSize+header.IPv6MinimumSize || header.Ethernet(frame).Type() != header.IPv6ProtocolNumber {
		return ndpFrame{}, false
	}
	eth := header.Ethernet(frame)
	ip := header.IPv6(frame[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) || ip.TransportProtocol() != header.ICMPv6ProtocolNumber {
		return ndpFrame{}, false
	}
	icmp := header.ICMPv6(ip.Payload())
	if len(icmp) < header.ICMPv6NeighborSolicitMinimumSize {
		return ndpFrame{}, false
	}
	f := ndpFrame{
		EthSrc:   eth.SourceAddress(),
		EthDst:   eth.DestinationAddress(),
		Src:      stack.FromAddr(ip.SourceAddress()),
		Dst:      stack.FromAddr(ip.DestinationAddress()),
		HopLimit: ip.HopLimit(),
		Type:     icmp.Type(),
		ChecksumOK: icmp.Checksum() == header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: icmp, Src: ip.SourceAddress(), Dst: ip.DestinationAddress(),
		}),
	}
	var opts header.NDPOptions
	switch f.Type {
	case header.ICMPv6NeighborSolicit:
		ns := header.NDPNeighborSolicit(icmp.MessageBody())
		f.Target = stack.FromAddr(ns.TargetAddress())
		opts = ns.Options()
	case header.ICMPv6NeighborAdvert:
		na := header.NDPNeighborAdvert(icmp.MessageBody())
		f.Target = stack.FromAddr(na.TargetAddress())
		f.Router, f.Solicited, f.Override = na.RouterFlag(), na.SolicitedFlag(), na.OverrideFlag()
		opts = na.Options()
	default:
		return ndpFrame{}, false
	}
	it, err := opts.Iter(true)
	if err != nil {
		return ndpFrame{}, false
	}
	for {
		o, done, err := it.Next()
		if err != nil || done {
			break
		}
		switch o := o.(type) {
		case header.NDPSourceLinkLayerAddressOption:
			f.LinkAddr = o.EthernetAddress()
		case header.NDPTargetLinkLayerAddressOption:
			f.LinkAddr = o.EthernetAddress()
		}
	}
	return f, true
}

// ndpPacket returns an Ethernet frame carrying an NS or NA from srcMAC.
// For an NS, linkAddr is the source link-layer address option (none when
// empty); for an NA, the target link-layer address option, with Override
// set.
func ndpPacket(typ header.ICMPv6Type, srcMAC tcpip.LinkAddress, src, dst, target netip.Addr, linkAddr tcpip.LinkAddress) *gstack.PacketBuffer {
	var opts header.NDPOptionsSerializer
	size := header.ICMPv6NeighborSolicitMinimumSize
	if typ == header.ICMPv6NeighborAdvert {
		size = header.ICMPv6NeighborAdvertMinimumSize
		if linkAddr != "" {
			opts = header.NDPOptionsSerializer{header.NDPTargetLinkLayerAddressOption(linkAddr)}
		}
	} else if linkAddr != "" {
		opts = header.NDPOptionsSerializer{header.NDPSourceLinkLayerAddressOption(linkAddr)}
	}
	size += opts.Length()
	ethDst := header.EthernetAddressFromMulticastIPv6Address(stack.ToAddr(dst))
	if !dst.IsMulticast() {
		ethDst = nicMAC
	}
	b := make([]byte, header.EthernetMinimumSize+header.IPv6MinimumSize+size)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: srcMAC, DstAddr: ethDst, Type: header.IPv6ProtocolNumber})
	header.IPv6(b[header.EthernetMinimumSize:]).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(size),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          header.NDPHopLimit,
		SrcAddr:           stack.ToAddr(src),
		DstAddr:           stack.ToAddr(dst),
	})
	icmp := header.ICMPv6(b[header.EthernetMinimumSize+header.IPv6MinimumSize:])
	icmp.SetType(typ)
	if typ == header.ICMPv6NeighborAdvert {
		na := header.NDPNeighborAdvert(icmp.MessageBody())
		na.SetOverrideFlag(true)
		na.SetTargetAddress(stack.ToAddr(target))
		na.Options().Serialize(opts)
	} else {
		ns := header.NDPNeighborSolicit(icmp.MessageBody())
		ns.SetTargetAddress(stack.ToAddr(target))
		ns.Options().Serialize(opts)
	}
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: stack.ToAddr(src), Dst: stack.ToAddr(dst)}))
	return gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

// solicitedNode returns the solicited-node multicast group of a.
func solicitedNode(a netip.Addr) netip.Addr {
	return stack.FromAddr(header.SolicitedNodeAddr(stack.ToAddr(a)))
}

// neighborSolicit returns the NS in which peerIP6 at peerMAC asks for
// target, to target's solicited-node group (what a Linux client sends).
func neighborSolicit(target netip.Addr) *gstack.PacketBuffer {
	return ndpPacket(header.ICMPv6NeighborSolicit, peerMAC, peerIP6, solicitedNode(target), target, peerMAC)
}

// wantNDPAnswer is the stack's answer to neighborSolicit(target).
func wantNDPAnswer(target netip.Addr) ndpFrame {
	return ndpFrame{
		EthSrc: nicMAC, EthDst: peerMAC, Src: target, Dst: peerIP6, HopLimit: header.NDPHopLimit,
		Type: header.ICMPv6NeighborAdvert, Target: target, Solicited: true, Override: true,
		LinkAddr: nicMAC, ChecksumOK: true,
	}
}

// unsolicitedNA is the unsolicited Neighbor Advertisement that the stack
// sends for ip.
func unsolicitedNA(ip netip.Addr) ndpFrame {
	return ndpFrame{
		EthSrc: nicMAC, EthDst: allNodesMAC, Src: ip, Dst: netip.MustParseAddr("ff02::1"), HopLimit: header.NDPHopLimit,
		Type: header.ICMPv6NeighborAdvert, Target: ip, Override: true, LinkAddr: nicMAC, ChecksumOK: true,
	}
}

// dadSolicit is the DAD Neighbor Solicitation that the stack sends for ip.
func dadSolicit(ip netip.Addr) ndpFrame {
	snm := solicitedNode(ip)
	return ndpFrame{
		EthSrc: nicMAC, EthDst: header.EthernetAddressFromMulticastIPv6Address(stack.ToAddr(snm)),
		Src: netip.IPv6Unspecified(), Dst: snm, HopLimit: header.NDPHopLimit,
		Type: header.ICMPv6NeighborSolicit, Target: ip, ChecksumOK: true,
	}
}

// solicit sends neighborSolicit(target) on the wire and returns the NDP
// frames that the stack sent back. gVisor handles NDP on the injecting
// goroutine, so an answer is queued by the time InjectInbound returns.
func solicit(wire *channel.Endpoint, target netip.Addr) []ndpFrame {
	ns := neighborSolicit(target)
	wire.InjectInbound(header.IPv6ProtocolNumber, ns)
	ns.DecRef()
	var out []ndpFrame
	for pkt := wire.Read(); pkt != nil; pkt = wire.Read() {
		if f, ok := parseNDP(pkt); ok {
			out = append(out, f)
		}
		pkt.DecRef()
	}
	return out
}

// ndpAnswers solicits each address and reports which ones the stack
// answered, failing the test on a malformed answer.
func ndpAnswers(t testing.TB, wire *channel.Endpoint, addrs ...netip.Addr) map[netip.Addr]bool {
	t.Helper()
	out := map[netip.Addr]bool{}
	for _, a := range addrs {
		got := solicit(wire, a)
		out[a] = len(got) > 0
		for _, f := range got {
			if diff := cmp.Diff(wantNDPAnswer(a), f, frameCmp); diff != "" {
				t.Errorf("answer to a Neighbor Solicitation for %s (-want +got):\n%s", a, diff)
			}
		}
	}
	return out
}

// TestNDPAnswer checks that the stack answers Neighbor Solicitations for
// exactly the IPv6 addresses it holds (static and table ones), with a
// solicited advertisement from the NIC's MAC, and stops when an address is
// released; IPv4 addresses on the same NIC keep answering ARP.
func TestNDPAnswer(t *testing.T) {
	var (
		a4   = netip.MustParseAddr("198.18.0.10")
		a10  = netip.MustParseAddr("2001:db8:18::10")
		a11  = netip.MustParseAddr("2001:db8:18::11")
		a100 = netip.MustParseAddr("2001:db8:18::100")
	)
	st, wire := newStack6(t, func(o *stack.Options) { o.Static = []netip.Addr{a100} })
	wire.Drain()
	steps := []struct {
		name       string
		prev, next []netip.Addr
		wantNDP    map[netip.Addr]bool
		wantARP    map[netip.Addr]bool
	}{
		{
			name:    "static only",
			wantNDP: map[netip.Addr]bool{a100: true, a10: false, a11: false},
		},
		{
			name:    "add mixed families",
			next:    []netip.Addr{a4, a10},
			wantNDP: map[netip.Addr]bool{a100: true, a10: true, a11: false},
			wantARP: map[netip.Addr]bool{a4: true},
		},
		{
			name:    "release the IPv6 one",
			prev:    []netip.Addr{a4, a10},
			next:    []netip.Addr{a4},
			wantNDP: map[netip.Addr]bool{a100: true, a10: false, a11: false},
			wantARP: map[netip.Addr]bool{a4: true},
		},
	}
	for _, s := range steps {
		prev, next := table(t, s.prev...), table(t, s.next...)
		if err := st.Prepare(prev, next); err != nil {
			t.Fatalf("%s: Prepare(%v, %v): %v", s.name, s.prev, s.next, err)
		}
		st.Commit(prev, next)
		wire.Drain() // announcements
		probe := make([]netip.Addr, 0, len(s.wantNDP))
		for a := range s.wantNDP {
			probe = append(probe, a)
		}
		if diff := cmp.Diff(s.wantNDP, ndpAnswers(t, wire, probe...), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("%s: Neighbor Solicitations answered (-want +got):\n%s", s.name, diff)
		}
		for a, want := range s.wantARP {
			if got := whoHas(t, wire, a); got != want {
				t.Errorf("%s: ARP for %s answered = %v, want %v", s.name, a, got, want)
			}
		}
	}
	want := append([]netip.Addr{a4}, a100)
	if diff := cmp.Diff(want, st.Addrs(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("Addrs() (-want +got):\n%s", diff)
	}
}

// ndpHost is a fake host on the wire: it records the NDP frames that the
// stack sends, and answers DAD solicitations for the addresses in owns with
// an advertisement to all-nodes from hostMAC, as Linux does.
type ndpHost struct {
	wire *channel.Endpoint
	owns map[netip.Addr]bool
	// other, if set, sees every frame first (NDP or not).
	other func(*gstack.PacketBuffer)

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	frames []ndpFrame
	times  []time.Time
}

func startNDPHost(t testing.TB, wire *channel.Endpoint, other func(*gstack.PacketBuffer), owns ...netip.Addr) *ndpHost {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &ndpHost{wire: wire, owns: map[netip.Addr]bool{}, other: other, cancel: cancel}
	for _, a := range owns {
		h.owns[a] = true
	}
	h.wg.Add(1)
	go h.run(ctx)
	t.Cleanup(h.stop)
	return h
}

func (h *ndpHost) run(ctx context.Context) {
	defer h.wg.Done()
	for {
		pkt := h.wire.ReadContext(ctx)
		if pkt == nil {
			return
		}
		if h.other != nil {
			h.other(pkt)
		}
		f, ok := parseNDP(pkt)
		pkt.DecRef()
		if !ok {
			continue
		}
		h.mu.Lock()
		h.frames = append(h.frames, f)
		h.times = append(h.times, time.Now())
		h.mu.Unlock()
		if f.Type == header.ICMPv6NeighborSolicit && f.Src == netip.IPv6Unspecified() && h.owns[f.Target] {
			na := ndpPacket(header.ICMPv6NeighborAdvert, hostMAC, f.Target, netip.MustParseAddr("ff02::1"), f.Target, hostMAC)
			h.wire.InjectInbound(header.IPv6ProtocolNumber, na)
			na.DecRef()
		}
	}
}

func (h *ndpHost) stop() {
	h.cancel()
	h.wg.Wait()
}

func (h *ndpHost) seen() ([]ndpFrame, []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]ndpFrame(nil), h.frames...), append([]time.Time(nil), h.times...)
}

func waitNDPFrames(h *ndpHost, n int) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if f, _ := h.seen(); len(f) >= n {
			return
		}
	}
}

var byNDPTarget = cmpopts.SortSlices(func(x, y ndpFrame) bool {
	if x.Target != y.Target {
		return x.Target.Less(y.Target)
	}
	return x.Type < y.Type
})

// TestUnsolicitedNA checks that every IPv6 address the stack starts holding
// is announced GARPCount times, GARPInterval apart, with an unsolicited
// Neighbor Advertisement (Override, target link-layer address the NIC's MAC,
// to all-nodes, hop limit 255, valid checksum), the first one on the wire
// when New or Prepare returns; IPv4 addresses get gratuitous ARP as before.
func TestUnsolicitedNA(t *testing.T) {
	var (
		a10  = netip.MustParseAddr("2001:db8:18::10")
		a11  = netip.MustParseAddr("2001:db8:18::11")
		a100 = netip.MustParseAddr("2001:db8:18::100")
		v4   = netip.MustParseAddr("198.18.0.10")
	)
	const interval = 30 * time.Millisecond
	tests := []struct {
		name     string
		count    int
		static   []netip.Addr
		restored []netip.Addr
		add      []netip.Addr
		want     []ndpFrame // in any order
		wantARP  int
	}{
		{
			name:   "static at start-up",
			count:  3,
			static: []netip.Addr{a100},
			want:   []ndpFrame{unsolicitedNA(a100), unsolicitedNA(a100), unsolicitedNA(a100)},
		},
		{
			name:  "prepare adds two",
			count: 2,
			add:   []netip.Addr{a10, a11},
			want:  []ndpFrame{unsolicitedNA(a10), unsolicitedNA(a11), unsolicitedNA(a10), unsolicitedNA(a11)},
		},
		{
			name:     "restored",
			count:    1,
			restored: []netip.Addr{a10},
			add:      []netip.Addr{a10},
			want:     []ndpFrame{unsolicitedNA(a10)},
		},
		{
			name:    "mixed families",
			count:   2,
			add:     []netip.Addr{v4, a10},
			want:    []ndpFrame{unsolicitedNA(a10), unsolicitedNA(a10)},
			wantARP: 2,
		},
		{
			name:  "count 0 disables",
			count: 0,
			add:   []netip.Addr{a10},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			st, wire := newStack6(t, func(o *stack.Options) {
				o.Static = tc.static
				o.Restored = tc.restored
				o.GARPCount = tc.count
				o.GARPInterval = interval
			})
			if len(tc.add) > 0 {
				start = time.Now()
				if err := st.Prepare(table(t), table(t, tc.add...)); err != nil {
					t.Fatalf("Prepare(+%v): %v", tc.add, err)
				}
			}
			if n, want := wire.NumQueued(), min(len(tc.want)+tc.wantARP, max(len(tc.static), len(tc.add))); n < want {
				t.Errorf("frames queued when New/Prepare returned = %d, want >= %d", n, want)
			}
			// Count the ARP frames beside the NDP ones.
			arp := 0
			var mu sync.Mutex
			h := startNDPHost(t, wire, func(pkt *gstack.PacketBuffer) {
				if _, ok := parseARP(pkt); ok {
					mu.Lock()
					arp++
					mu.Unlock()
				}
			})
			waitNDPFrames(h, len(tc.want))
			time.Sleep(3 * interval) // no more than count
			h.stop()
			got, times := h.seen()
			if diff := cmp.Diff(tc.want, got, frameCmp, byNDPTarget); diff != "" {
				t.Errorf("NDP frames on the wire with GARPCount %d (-want +got):\n%s", tc.count, diff)
			}
			mu.Lock()
			if arp != tc.wantARP {
				t.Errorf("gratuitous ARP frames = %d, want %d", arp, tc.wantARP)
			}
			mu.Unlock()
			if len(times) > 0 && tc.count > 1 {
				if d, want := times[len(times)-1].Sub(start), time.Duration(tc.count-1)*interval; d < want {
					t.Errorf("last advertisement %v after start, want >= %v (GARPInterval %v)", d, want, interval)
				}
			}
		})
	}
}

// TestNDPDuplicateAddress checks NDP duplicate address detection in
// Prepare: a new IPv6 address that a host on the wire advertises is
// refused with a conflict naming the address and the host's MAC and is not
// held; one that nobody advertises is held after DADProbes solicitations
// and answers at once (not tentative); restored addresses are not probed
// and answer at once too.
func TestNDPDuplicateAddress(t *testing.T) {
	var (
		a10 = netip.MustParseAddr("2001:db8:18::10")
		a20 = netip.MustParseAddr("2001:db8:18::20")
		v4  = netip.MustParseAddr("198.18.0.10")
	)
	const (
		probes   = 2
		interval = 50 * time.Millisecond
	)
	tests := []struct {
		name         string
		restored     []netip.Addr
		owned        []netip.Addr
		add          []netip.Addr
		wantConflict string
		wantAddrs    []netip.Addr
		wantProbes   []ndpFrame
	}{
		{
			name:       "nobody answers",
			add:        []netip.Addr{a10},
			wantAddrs:  []netip.Addr{a10},
			wantProbes: []ndpFrame{dadSolicit(a10), dadSolicit(a10)},
		},
		{
			name:         "host answers",
			owned:        []netip.Addr{a20},
			add:          []netip.Addr{a20},
			wantConflict: "2001:db8:18::20 is already in use on the front link by 02:00:00:00:00:99 (duplicate address)",
			wantProbes:   []ndpFrame{dadSolicit(a20)},
		},
		{
			name:         "one of two answered: neither held",
			owned:        []netip.Addr{a20},
			add:          []netip.Addr{a10, a20},
			wantConflict: "2001:db8:18::20 is already in use on the front link by 02:00:00:00:00:99 (duplicate address)",
			wantProbes:   []ndpFrame{dadSolicit(a10), dadSolicit(a20), dadSolicit(a10)},
		},
		{
			name:       "mixed families",
			add:        []netip.Addr{v4, a10},
			wantAddrs:  []netip.Addr{v4, a10},
			wantProbes: []ndpFrame{dadSolicit(a10), dadSolicit(a10)},
		},
		{
			name:      "restored address not probed",
			restored:  []netip.Addr{a20},
			owned:     []netip.Addr{a20},
			add:       []netip.Addr{a20},
			wantAddrs: []netip.Addr{a20},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, wire := newStack6(t, func(o *stack.Options) {
				o.Restored = tc.restored
				o.DADProbes = probes
				o.DADInterval = interval
			})
			wire.Drain()
			h := startNDPHost(t, wire, nil, tc.owned...)
			var minTook time.Duration
			if len(tc.wantProbes) > 0 {
				minTook = probes * interval
			}
			prepareAndCheck(t, st, tc.add, h.stop, tc.wantConflict, minTook)
			got, _ := h.seen()
			var dad []ndpFrame
			for _, f := range got {
				if f.Type == header.ICMPv6NeighborSolicit && f.Src == netip.IPv6Unspecified() {
					// The nonce option is gVisor's own; what matters is
					// who asks for what.
					dad = append(dad, f)
				}
			}
			if diff := cmp.Diff(tc.wantProbes, dad, frameCmp, byNDPTarget); diff != "" {
				t.Errorf("DAD solicitations on the wire (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantAddrs, st.Addrs(), cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("Addrs() after Prepare(+%v) (-want +got):\n%s", tc.add, diff)
			}
			// Every IPv6 address probed or held: answered exactly when
			// held, at once (gVisor keeps a tentative address silent).
			wire.Drain()
			wantNDP := map[netip.Addr]bool{}
			for _, a := range tc.add {
				if a.Is6() {
					wantNDP[a] = false
				}
			}
			for _, a := range tc.wantAddrs {
				if a.Is6() {
					wantNDP[a] = true
				}
			}
			var ask []netip.Addr
			for a := range wantNDP {
				ask = append(ask, a)
			}
			if diff := cmp.Diff(wantNDP, ndpAnswers(t, wire, ask...), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("Neighbor Solicitations answered after Prepare(+%v) (-want +got):\n%s", tc.add, diff)
			}
		})
	}
}

// TestNDPDuplicateAddressThenRestoredNotTentative checks that after a
// probed IPv6 add, an address added without probing (restored) is not left
// tentative by the DAD setting of the probe: it answers at once.
func TestNDPDuplicateAddressThenRestoredNotTentative(t *testing.T) {
	a10, a11 := netip.MustParseAddr("2001:db8:18::10"), netip.MustParseAddr("2001:db8:18::11")
	st, wire := newStack6(t, func(o *stack.Options) {
		o.Restored = []netip.Addr{a11}
		o.DADProbes = 1
		o.DADInterval = 20 * time.Millisecond
	})
	if err := st.Prepare(table(t), table(t, a10)); err != nil {
		t.Fatalf("Prepare(+%s): %v", a10, err)
	}
	if err := st.Prepare(table(t, a10), table(t, a10, a11)); err != nil {
		t.Fatalf("Prepare(+%s): %v", a11, err)
	}
	wire.Drain()
	want := map[netip.Addr]bool{a10: true, a11: true}
	if diff := cmp.Diff(want, ndpAnswers(t, wire, a10, a11), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("Neighbor Solicitations answered right after Prepare (-want +got):\n%s", diff)
	}
}

// mldGroups returns the multicast groups that an MLDv2 report in frame
// lists (RFC 3810 section 5.2), from any source, and whether frame is one:
// sent to ff02::16 with hop limit 1 and a hop-by-hop options header.
func mldGroups(frame []byte) ([]netip.Addr, bool) {
	if len(frame) < header.EthernetMinimumSize+header.IPv6MinimumSize || header.Ethernet(frame).Type() != header.IPv6ProtocolNumber {
		return nil, false
	}
	ip := header.IPv6(frame[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) || ip.HopLimit() != 1 || stack.FromAddr(ip.DestinationAddress()) != netip.MustParseAddr("ff02::16") {
		return nil, false
	}
	b := ip.Payload()
	if ip.NextHeader() != uint8(header.IPv6HopByHopOptionsExtHdrIdentifier) || len(b) < 8 {
		return nil, false
	}
	next, hbh := b[0], (int(b[1])+1)*8
	if next != uint8(header.ICMPv6ProtocolNumber) || len(b) < hbh+8 {
		return nil, false
	}
	b = b[hbh:]
	if header.ICMPv6Type(b[0]) != header.ICMPv6MulticastListenerV2Report {
		return nil, false
	}
	n := int(b[6])<<8 | int(b[7])
	b = b[8:]
	var groups []netip.Addr
	for range n {
		if len(b) < 20 {
			return nil, false
		}
		aux, sources := int(b[1]), int(b[2])<<8|int(b[3])
		groups = append(groups, netip.AddrFrom16([16]byte(b[4:20])))
		skip := 20 + 16*sources + 4*aux
		if len(b) < skip {
			return nil, false
		}
		b = b[skip:]
	}
	return groups, true
}

// TestMLDReport checks that holding an IPv6 address makes the stack report
// its solicited-node group with MLDv2, so that a switch with MLD snooping
// forwards the address's Neighbor Solicitations to the gateway.
func TestMLDReport(t *testing.T) {
	a10 := netip.MustParseAddr("2001:db8:18::10")
	st, wire := newStack6(t, nil)
	wire.Drain()
	if err := st.Prepare(table(t), table(t, a10)); err != nil {
		t.Fatalf("Prepare(+%s): %v", a10, err)
	}
	want := solicitedNode(a10)
	var reported []netip.Addr
	for pkt := wire.Read(); pkt != nil; pkt = wire.Read() {
		v := pkt.ToView()
		frame := v.AsSlice()
		if groups, ok := mldGroups(frame); ok {
			if dst := header.Ethernet(frame).DestinationAddress(); dst != tcpip.LinkAddress("\x33\x33\x00\x00\x00\x16") {
				t.Errorf("MLD report to Ethernet %s, want 33:33:00:00:00:16", dst)
			}
			reported = append(reported, groups...)
		}
		v.Release()
		pkt.DecRef()
	}
	found := false
	for _, g := range reported {
		found = found || g == want
	}
	if !found {
		t.Errorf("groups in MLD reports after holding %s = %v, want %s (its solicited-node group)", a10, reported, want)
	}
}

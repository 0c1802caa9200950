package stack_test

import (
	"context"
	"net/netip"
	"strings"
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

// hostMAC is the link address of a fake host that holds an address itself.
const hostMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x99")

// arpFrame is what matters of an ARP frame on the wire.
type arpFrame struct {
	EthSrc, EthDst     tcpip.LinkAddress
	Op                 header.ARPOp
	Sender, Target     tcpip.LinkAddress
	SenderIP, TargetIP netip.Addr
}

// parseARP returns the ARP frame in pkt, if it is one.
func parseARP(pkt *gstack.PacketBuffer) (arpFrame, bool) {
	v := pkt.ToView()
	defer v.Release()
	frame := v.AsSlice()
	if len(frame) < header.EthernetMinimumSize+header.ARPSize || header.Ethernet(frame).Type() != header.ARPProtocolNumber {
		return arpFrame{}, false
	}
	eth := header.Ethernet(frame)
	a := header.ARP(frame[header.EthernetMinimumSize:])
	if !a.IsValid() {
		return arpFrame{}, false
	}
	return arpFrame{
		EthSrc:   eth.SourceAddress(),
		EthDst:   eth.DestinationAddress(),
		Op:       a.Op(),
		Sender:   tcpip.LinkAddress(a.HardwareAddressSender()),
		Target:   tcpip.LinkAddress(a.HardwareAddressTarget()),
		SenderIP: netip.AddrFrom4([4]byte(a.ProtocolAddressSender())),
		TargetIP: netip.AddrFrom4([4]byte(a.ProtocolAddressTarget())),
	}, true
}

// wireHost is a fake host on the wire: it records the ARP frames that the
// stack sends, with their time, and answers ARP probes for the addresses in
// owns with a reply from hostMAC, as Linux does.
type wireHost struct {
	wire *channel.Endpoint
	owns map[netip.Addr]bool

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	frames []arpFrame
	times  []time.Time
}

// startHost starts a wireHost on wire; stop it before reading the wire
// from the test's goroutine.
func startHost(t testing.TB, wire *channel.Endpoint, owns ...netip.Addr) *wireHost {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &wireHost{wire: wire, owns: map[netip.Addr]bool{}, cancel: cancel}
	for _, a := range owns {
		h.owns[a] = true
	}
	h.wg.Add(1)
	go h.run(ctx)
	t.Cleanup(h.stop)
	return h
}

func (h *wireHost) run(ctx context.Context) {
	defer h.wg.Done()
	for {
		pkt := h.wire.ReadContext(ctx)
		if pkt == nil {
			return
		}
		f, ok := parseARP(pkt)
		pkt.DecRef()
		if !ok {
			continue
		}
		h.mu.Lock()
		h.frames = append(h.frames, f)
		h.times = append(h.times, time.Now())
		h.mu.Unlock()
		if f.Op == header.ARPRequest && f.SenderIP == netip.IPv4Unspecified() && h.owns[f.TargetIP] {
			reply := arpReplyFrame(f.TargetIP, f.Sender)
			h.wire.InjectInbound(header.ARPProtocolNumber, reply)
			reply.DecRef()
		}
	}
}

// stop stops the host and waits for it; it is idempotent.
func (h *wireHost) stop() {
	h.cancel()
	h.wg.Wait()
}

// seen returns the ARP frames recorded so far and when each arrived.
func (h *wireHost) seen() ([]arpFrame, []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]arpFrame(nil), h.frames...), append([]time.Time(nil), h.times...)
}

// arpReplyFrame is hostMAC's answer to an ARP probe for ip from to: a
// unicast reply with sender ip and target 0.0.0.0 (Linux's arp_process).
func arpReplyFrame(ip netip.Addr, to tcpip.LinkAddress) *gstack.PacketBuffer {
	b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: hostMAC, DstAddr: to, Type: header.ARPProtocolNumber})
	a := header.ARP(b[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPReply)
	copy(a.HardwareAddressSender(), hostMAC)
	copy(a.ProtocolAddressSender(), ip.AsSlice())
	copy(a.HardwareAddressTarget(), to)
	return gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

// announcement is the gratuitous ARP frame that the stack sends for ip.
func announcement(ip netip.Addr) arpFrame {
	return arpFrame{
		EthSrc: nicMAC, EthDst: header.EthernetBroadcastAddress, Op: header.ARPRequest,
		Sender: nicMAC, Target: tcpip.LinkAddress("\x00\x00\x00\x00\x00\x00"),
		SenderIP: ip, TargetIP: ip,
	}
}

// probe is the ARP probe that the stack sends for ip.
func probe(ip netip.Addr) arpFrame {
	return arpFrame{
		EthSrc: nicMAC, EthDst: header.EthernetBroadcastAddress, Op: header.ARPRequest,
		Sender: nicMAC, Target: tcpip.LinkAddress("\x00\x00\x00\x00\x00\x00"),
		SenderIP: netip.IPv4Unspecified(), TargetIP: ip,
	}
}

// waitFrames waits up to 5 s for the host to have seen n ARP frames.
func waitFrames(h *wireHost, n int) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if f, _ := h.seen(); len(f) >= n {
			return
		}
	}
}

var (
	frameCmp = cmp.Options{cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()}
	// byTarget compares frame lists in any order: the announcements and
	// probes of two addresses interleave as their timers fire.
	byTarget = cmpopts.SortSlices(func(x, y arpFrame) bool { return x.TargetIP.Less(y.TargetIP) })
)

// TestGratuitousARP checks that every address the stack starts holding is
// announced GARPCount times, GARPInterval apart, with sender = target = the
// address from the NIC's MAC to broadcast, and that the first announcement
// is on the wire when New or Prepare returns.
func TestGratuitousARP(t *testing.T) {
	a10, a11, a100 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.100")
	const interval = 30 * time.Millisecond
	tests := []struct {
		name       string
		count      int
		static     []netip.Addr
		add        []netip.Addr
		wantFrames []arpFrame // in any order
	}{
		{
			name:       "static at start-up",
			count:      3,
			static:     []netip.Addr{a100},
			wantFrames: []arpFrame{announcement(a100), announcement(a100), announcement(a100)},
		},
		{
			name:       "prepare adds two",
			count:      2,
			add:        []netip.Addr{a10, a11},
			wantFrames: []arpFrame{announcement(a10), announcement(a11), announcement(a10), announcement(a11)},
		},
		{
			name:       "count 1",
			count:      1,
			add:        []netip.Addr{a10},
			wantFrames: []arpFrame{announcement(a10)},
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
			st, wire := newStackOpts(t, func(o *stack.Options) {
				o.Static = tc.static
				o.GARPCount = tc.count
				o.GARPInterval = interval
			})
			if len(tc.add) > 0 {
				start = time.Now()
				if err := st.Prepare(table(t), table(t, tc.add...)); err != nil {
					t.Fatalf("Prepare(+%v): %v", tc.add, err)
				}
			}
			// The first announcement of each address is queued before
			// New or Prepare returns.
			if n, want := wire.NumQueued(), min(len(tc.wantFrames), max(len(tc.static), len(tc.add))); n < want {
				t.Errorf("frames queued when New/Prepare returned = %d, want >= %d", n, want)
			}
			h := startHost(t, wire)
			waitFrames(h, len(tc.wantFrames))
			time.Sleep(3 * interval) // no more than count
			h.stop()
			got, times := h.seen()
			if diff := cmp.Diff(tc.wantFrames, got, frameCmp, byTarget); diff != "" {
				t.Errorf("ARP frames on the wire with GARPCount %d (-want +got):\n%s", tc.count, diff)
			}
			// The last announcement goes out (count-1) intervals after the
			// first, not sooner.
			if len(times) > 0 && tc.count > 1 {
				if d, want := times[len(times)-1].Sub(start), time.Duration(tc.count-1)*interval; d < want {
					t.Errorf("last announcement %v after start, want >= %v (GARPInterval %v)", d, want, interval)
				}
			}
		})
	}
}

// TestGratuitousARPStopsOnRelease checks that releasing an address stops
// its remaining announcements.
func TestGratuitousARPStopsOnRelease(t *testing.T) {
	a10 := netip.MustParseAddr("198.18.0.10")
	st, wire := newStackOpts(t, func(o *stack.Options) {
		o.GARPCount = 5
		o.GARPInterval = 50 * time.Millisecond
	})
	prev, next := table(t), table(t, a10)
	if err := st.Prepare(prev, next); err != nil {
		t.Fatalf("Prepare(+%s): %v", a10, err)
	}
	st.Commit(prev, next)
	st.Commit(next, prev) // release
	h := startHost(t, wire)
	time.Sleep(300 * time.Millisecond)
	h.stop()
	if got, _ := h.seen(); len(got) > 1 {
		t.Errorf("ARP frames after %s was released at once = %d (%v), want at most the first announcement", a10, len(got), got)
	}
}

// TestDuplicateAddress checks RFC 5227 probing in Prepare: a new address
// that a host on the wire answers for is refused with a conflict that names
// the address and the host's MAC and is not held; one that nobody answers
// for is held after DADProbes probes; static and restored addresses are not
// probed.
func TestDuplicateAddress(t *testing.T) {
	var (
		a10  = netip.MustParseAddr("198.18.0.10")
		a20  = netip.MustParseAddr("198.18.0.20")
		a100 = netip.MustParseAddr("198.18.0.100")
	)
	const (
		probes   = 2
		interval = 50 * time.Millisecond
	)
	tests := []struct {
		name     string
		static   []netip.Addr
		restored []netip.Addr
		owned    []netip.Addr // by the fake host
		add      []netip.Addr
		// wantConflict is the ConflictError's message; "" means success.
		wantConflict string
		wantAddrs    []netip.Addr
		wantProbes   []arpFrame
	}{
		{
			name:       "nobody answers",
			add:        []netip.Addr{a10},
			wantAddrs:  []netip.Addr{a10},
			wantProbes: []arpFrame{probe(a10), probe(a10)},
		},
		{
			name:         "host answers",
			owned:        []netip.Addr{a20},
			add:          []netip.Addr{a20},
			wantConflict: "198.18.0.20 is already in use on the front link by 02:00:00:00:00:99 (duplicate address)",
			wantProbes:   []arpFrame{probe(a20)}, // the answer stops probing
		},
		{
			name:         "one of two answered: neither held",
			owned:        []netip.Addr{a20},
			add:          []netip.Addr{a10, a20},
			wantConflict: "198.18.0.20 is already in use on the front link by 02:00:00:00:00:99 (duplicate address)",
			wantProbes:   []arpFrame{probe(a10), probe(a20), probe(a10)},
		},
		{
			name:      "restored address not probed",
			restored:  []netip.Addr{a20},
			owned:     []netip.Addr{a20},
			add:       []netip.Addr{a20},
			wantAddrs: []netip.Addr{a20},
		},
		{
			name:       "static address not probed",
			static:     []netip.Addr{a100},
			owned:      []netip.Addr{a100},
			add:        []netip.Addr{a10, a100},
			wantAddrs:  []netip.Addr{a10, a100},
			wantProbes: []arpFrame{probe(a10), probe(a10)},
		},
		{
			name:         "static address not probed, new one answered",
			static:       []netip.Addr{a100},
			owned:        []netip.Addr{a20, a100},
			add:          []netip.Addr{a20, a100},
			wantConflict: "198.18.0.20 is already in use on the front link by 02:00:00:00:00:99 (duplicate address)",
			wantAddrs:    []netip.Addr{a100},
			wantProbes:   []arpFrame{probe(a20)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, wire := newStackOpts(t, func(o *stack.Options) {
				o.Static = tc.static
				o.Restored = tc.restored
				o.DADProbes = probes
				o.DADInterval = interval
			})
			wire.Drain()
			h := startHost(t, wire, tc.owned...)
			var minTook time.Duration
			if len(tc.wantProbes) > 0 {
				minTook = probes * interval
			}
			err := prepareAndCheck(t, st, tc.add, h.stop, tc.wantConflict, minTook)
			if tc.wantConflict != "" && !strings.Contains(err.Error(), hostMAC.String()) {
				t.Errorf("Prepare(+%v) error %q does not name the holder %s", tc.add, err, hostMAC)
			}
			// vipmux_dad_conflicts_total: one address refused per conflict.
			wantDAD := uint64(0)
			if tc.wantConflict != "" {
				wantDAD = 1
			}
			if got := st.DADConflicts(); got != wantDAD {
				t.Errorf("DADConflicts() after Prepare(+%v) = %d, want %d", tc.add, got, wantDAD)
			}
			got, _ := h.seen()
			var probes []arpFrame
			for _, f := range got {
				if f.SenderIP == netip.IPv4Unspecified() {
					probes = append(probes, f)
				}
			}
			if diff := cmp.Diff(tc.wantProbes, probes, frameCmp, byTarget); diff != "" {
				t.Errorf("ARP probes on the wire (-want +got):\n%s", diff)
			}
			wantHeld := tc.wantAddrs
			if diff := cmp.Diff(tc.wantAddrs, st.Addrs(), cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("Addrs() after Prepare(+%v) (-want +got):\n%s", tc.add, diff)
			}
			probe := append(append([]netip.Addr(nil), tc.add...), wantHeld...)
			wantARP := map[netip.Addr]bool{}
			for _, a := range probe {
				wantARP[a] = false
			}
			for _, a := range wantHeld {
				wantARP[a] = true
			}
			if diff := cmp.Diff(wantARP, answers(t, wire, probe...), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("ARP answered after Prepare(+%v) (-want +got):\n%s", tc.add, diff)
			}
		})
	}
}

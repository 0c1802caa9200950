package stack_test

import (
	"context"
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// The addresses that the fuzzed stack holds, and a client on the link.
var (
	fuzzIP4   = netip.MustParseAddr("198.18.0.100")
	fuzzIP6   = netip.MustParseAddr("2001:db8:18::100")
	fuzzPeer6 = netip.MustParseAddr("2001:db8:18::1")
)

// fuzzHeapLimit bounds the heap while fuzzing: the stack's state for
// stray frames (half-open connections, neighbour entries, fragment
// reassembly) has limits of its own, and a frame that made it grow
// without bound would pass it.
const fuzzHeapLimit = 1 << 30

// FuzzInboundFrame (issue 12 point 12) pushes random and mutated Ethernet
// frames into the real stack, as the front NIC would deliver them from a
// hostile LAN: the stack holds an IPv4 and an IPv6 address and hands
// every SYN to a TCP handler, as serve's does. The seed corpus holds
// valid frames of each kind the stack parses (ARP, IPv4 with options and
// fragments, IPv6 with extension headers, ICMP, TCP with ordinary and odd
// options), so that mutations start deep in each parser. No frame may
// panic the stack, and the heap stays under fuzzHeapLimit.
func FuzzInboundFrame(f *testing.F) {
	for _, fr := range fuzzSeeds() {
		f.Add(fr)
	}
	wire := channel.New(64, 1500, nicMAC)
	st, err := stack.New(stack.Options{
		Link:     ethernet.New(wire),
		Networks: []netip.Prefix{frontNet, frontNet6},
		Static:   []netip.Addr{fuzzIP4, fuzzIP6},
		Logger:   discard,
	})
	if err != nil {
		f.Fatalf("stack.New: %v", err)
	}
	f.Cleanup(func() { st.Close(); wire.Drain() })
	// A RST for every SYN: the handshake path as far as the handler,
	// without leaving goroutines in CreateEndpoint that no fuzz input can
	// ever complete.
	st.HandleTCP(8, func(r *tcp.ForwarderRequest) { r.Complete(true) })
	var execs atomic.Uint64
	f.Fuzz(func(t *testing.T, frame []byte) {
		pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
		wire.InjectInbound(0, pkt) // ethernet.Endpoint reads the type from the header
		pkt.DecRef()
		wire.Drain() // what the stack answered: dropped, so the queue never fills
		if execs.Add(1)%1024 == 0 {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > fuzzHeapLimit {
				t.Fatalf("heap %d bytes after %d frames, want under %d", m.HeapAlloc, execs.Load(), fuzzHeapLimit)
			}
		}
	})
}

// fuzzSeeds are valid frames to the fuzzed stack.
func fuzzSeeds() [][]byte {
	peer4 := peerIP
	tcpOpts := []byte{
		2, 4, 0x05, 0xb4, // MSS 1460
		3, 3, 7, // window scale 7
		4, 2, // SACK permitted
		8, 10, 0, 0, 0, 1, 0, 0, 0, 0, // timestamps
		1, // NOP
	}
	oddOpts := []byte{
		2, 4, 0, 0, // MSS 0
		3, 3, 200, // window scale beyond 14
		30, 2, // unknown kind
		8, 10, 0, 0, 0, 1, 0, 0, // timestamps cut short by the end of the header
		5, 2, 0, // SACK block of a bad length
		0, // end of options
	}
	return [][]byte{
		fuzzARP(1, peer4, fuzzIP4),   // who has 198.18.0.100
		fuzzARP(2, peer4, fuzzIP4),   // an unsolicited reply claiming it
		fuzzARP(1, fuzzIP4, fuzzIP4), // a gratuitous ARP for our address
		fuzzIPv4(peer4, fuzzIP4, header.TCPProtocolNumber, nil, 0, fuzzTCP(peer4, fuzzIP4, header.TCPFlagSyn, tcpOpts)),
		fuzzIPv4(peer4, fuzzIP4, header.TCPProtocolNumber, nil, 0, fuzzTCP(peer4, fuzzIP4, header.TCPFlagSyn, oddOpts)),
		fuzzIPv4(peer4, fuzzIP4, header.TCPProtocolNumber, nil, 0, fuzzTCP(peer4, fuzzIP4, header.TCPFlagAck|header.TCPFlagPsh, []byte{1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1})),
		fuzzIPv4(peer4, fuzzIP4, header.TCPProtocolNumber, []byte{7, 7, 4, 0, 0, 0, 0, 1}, 0, fuzzTCP(peer4, fuzzIP4, header.TCPFlagSyn, nil)), // record route option
		fuzzIPv4(peer4, fuzzIP4, header.ICMPv4ProtocolNumber, nil, 0, fuzzICMPv4()),
		fuzzIPv4(peer4, fuzzIP4, header.ICMPv4ProtocolNumber, nil, header.IPv4FlagMoreFragments, fuzzICMPv4()), // a first fragment
		fuzzIPv6(fuzzPeer6, fuzzIP6, header.TCPProtocolNumber, nil, fuzzTCP(fuzzPeer6, fuzzIP6, header.TCPFlagSyn, tcpOpts)),
		fuzzIPv6(fuzzPeer6, fuzzIP6, header.ICMPv6ProtocolNumber, nil, fuzzICMPv6(fuzzPeer6, fuzzIP6, header.ICMPv6EchoRequest, nil)),
		fuzzIPv6(fuzzPeer6, fuzzIP6, header.ICMPv6ProtocolNumber, nil, fuzzNS(fuzzPeer6, fuzzIP6)),
		// Extension headers: hop-by-hop (router alert), routing, fragment, destination options.
		fuzzIPv6(fuzzPeer6, fuzzIP6, header.TCPProtocolNumber, []fuzzExt{
			{kind: uint8(header.IPv6HopByHopOptionsExtHdrIdentifier), body: []byte{5, 2, 0, 0, 1, 0}},
			{kind: uint8(header.IPv6RoutingExtHdrIdentifier), body: []byte{4, 0, 0, 0, 0, 0}},
			{kind: uint8(header.IPv6FragmentExtHdrIdentifier), body: []byte{0, 0, 0, 0, 0, 1}},
			{kind: uint8(header.IPv6DestinationOptionsExtHdrIdentifier), body: []byte{1, 4, 0, 0, 0, 0}},
		}, fuzzTCP(fuzzPeer6, fuzzIP6, header.TCPFlagSyn, oddOpts)),
		fuzzIPv6(fuzzPeer6, fuzzIP6, header.ICMPv6ProtocolNumber, []fuzzExt{
			{kind: uint8(header.IPv6FragmentExtHdrIdentifier), body: []byte{0, 1, 0, 0, 0, 2}}, // a first fragment, more to come
		}, fuzzICMPv6(fuzzPeer6, fuzzIP6, header.ICMPv6EchoRequest, make([]byte, 64))),
	}
}

// fuzzEth frames payload for the stack's MAC.
func fuzzEth(proto tcpip.NetworkProtocolNumber, payload []byte) []byte {
	b := make([]byte, header.EthernetMinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: peerMAC, DstAddr: nicMAC, Type: proto})
	copy(b[header.EthernetMinimumSize:], payload)
	return b
}

// fuzzARP is an ARP packet (op 1 request, 2 reply) from peerMAC, framed
// to broadcast.
func fuzzARP(op uint16, sender, target netip.Addr) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: peerMAC, DstAddr: header.EthernetBroadcastAddress, Type: header.ARPProtocolNumber})
	a := header.ARP(b[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPOp(op))
	copy(a.HardwareAddressSender(), peerMAC)
	s, tg := sender.As4(), target.As4()
	copy(a.ProtocolAddressSender(), s[:])
	copy(a.ProtocolAddressTarget(), tg[:])
	return b
}

// fuzzIPv4 is an IPv4 packet with options opts (a multiple of 4 bytes)
// and fragment flags, framed.
func fuzzIPv4(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, opts []byte, flags uint8, payload []byte) []byte {
	hl := header.IPv4MinimumSize + len(opts)
	b := make([]byte, hl+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		ID:          1,
		Flags:       flags,
		TTL:         64,
		Protocol:    uint8(proto),
		SrcAddr:     tcpip.AddrFrom4(src.As4()),
		DstAddr:     tcpip.AddrFrom4(dst.As4()),
	})
	// The options raw, as a hostile sender writes them.
	b[0] = 0x40 | uint8(hl/4)
	copy(b[header.IPv4MinimumSize:], opts)
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[hl:], payload)
	return fuzzEth(header.IPv4ProtocolNumber, b)
}

// fuzzExt is one IPv6 extension header: its kind and its body after the
// next-header and length bytes (6 bytes: one 8-byte unit in all).
type fuzzExt struct {
	kind uint8
	body []byte
}

// fuzzIPv6 is an IPv6 packet with the extension headers exts, framed.
func fuzzIPv6(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, exts []fuzzExt, payload []byte) []byte {
	var ext []byte
	for i, e := range exts {
		next := uint8(proto)
		if i+1 < len(exts) {
			next = exts[i+1].kind
		}
		ext = append(ext, next, 0)
		ext = append(ext, e.body...)
	}
	b := make([]byte, header.IPv6MinimumSize+len(ext)+len(payload))
	first := uint8(proto)
	if len(exts) > 0 {
		first = exts[0].kind
	}
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(ext) + len(payload)),
		TransportProtocol: tcpip.TransportProtocolNumber(first),
		HopLimit:          255,
		SrcAddr:           tcpip.AddrFrom16(src.As16()),
		DstAddr:           tcpip.AddrFrom16(dst.As16()),
	})
	copy(b[header.IPv6MinimumSize:], ext)
	copy(b[header.IPv6MinimumSize+len(ext):], payload)
	return fuzzEth(header.IPv6ProtocolNumber, b)
}

// fuzzTCP is a TCP segment from port 40000 to 80 with options opts
// (padded to 4 bytes), its checksum right.
func fuzzTCP(src, dst netip.Addr, flags header.TCPFlags, opts []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	b := make([]byte, header.TCPMinimumSize+len(opts))
	seg := header.TCP(b)
	seg.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 1000, AckNum: 1, DataOffset: uint8(len(b)), Flags: flags, WindowSize: 65535})
	copy(b[header.TCPMinimumSize:], opts)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, fuzzAddr(src), fuzzAddr(dst), uint16(len(b)))
	seg.SetChecksum(^seg.CalculateChecksum(sum))
	return b
}

// fuzzICMPv4 is an echo request.
func fuzzICMPv4() []byte {
	b := make([]byte, header.ICMPv4MinimumSize+8)
	ic := header.ICMPv4(b)
	ic.SetType(header.ICMPv4Echo)
	ic.SetChecksum(^checksum.Checksum(b, 0))
	return b
}

// fuzzICMPv6 is an ICMPv6 message of type typ with payload after its
// 8-byte header, its checksum right.
func fuzzICMPv6(src, dst netip.Addr, typ header.ICMPv6Type, payload []byte) []byte {
	b := make([]byte, header.ICMPv6MinimumSize+4+len(payload))
	ic := header.ICMPv6(b)
	ic.SetType(typ)
	copy(b[8:], payload)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: fuzzAddr(src), Dst: fuzzAddr(dst)}))
	return b
}

// fuzzNS is a neighbour solicitation for target with a source link-layer
// address option.
func fuzzNS(src, target netip.Addr) []byte {
	body := make([]byte, 4+16+8)
	t16 := target.As16()
	copy(body[4:], t16[:])
	body[20], body[21] = 1, 1 // source link-layer address, one 8-byte unit
	copy(body[22:], peerMAC)
	b := make([]byte, 4+len(body))
	ic := header.ICMPv6(b)
	ic.SetType(header.ICMPv6NeighborSolicit)
	copy(b[4:], body)
	binary.BigEndian.PutUint16(b[2:], 0)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: fuzzAddr(src), Dst: fuzzAddr(target)}))
	return b
}

func fuzzAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// TestFuzzSeedsReachTheStack checks that FuzzInboundFrame's seed corpus is
// made of frames that the stack takes as valid (an answer comes back), so
// that mutations start deep in each parser rather than at a checksum.
func TestFuzzSeedsReachTheStack(t *testing.T) {
	seeds := fuzzSeeds()
	tests := []struct {
		name  string
		frame []byte
		// want is the answer's EtherType and, for IP, its protocol.
		wantEth   tcpip.NetworkProtocolNumber
		wantProto tcpip.TransportProtocolNumber
	}{
		{name: "arp request", frame: seeds[0], wantEth: header.ARPProtocolNumber},
		{name: "ipv4 syn", frame: seeds[3], wantEth: header.IPv4ProtocolNumber, wantProto: header.TCPProtocolNumber},
		{name: "ipv4 syn odd options", frame: seeds[4], wantEth: header.IPv4ProtocolNumber, wantProto: header.TCPProtocolNumber},
		{name: "ipv4 record route", frame: seeds[6], wantEth: header.IPv4ProtocolNumber, wantProto: header.TCPProtocolNumber},
		{name: "icmpv4 echo", frame: seeds[7], wantEth: header.IPv4ProtocolNumber, wantProto: header.ICMPv4ProtocolNumber},
		{name: "ipv6 syn", frame: seeds[9], wantEth: header.IPv6ProtocolNumber, wantProto: header.TCPProtocolNumber},
		{name: "icmpv6 echo", frame: seeds[10], wantEth: header.IPv6ProtocolNumber, wantProto: header.ICMPv6ProtocolNumber},
		{name: "ipv6 extension headers", frame: seeds[12], wantEth: header.IPv6ProtocolNumber, wantProto: header.TCPProtocolNumber},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, wire := newStackOpts(t, func(o *stack.Options) {
				o.Networks = []netip.Prefix{frontNet, frontNet6}
				o.Static = []netip.Addr{fuzzIP4, fuzzIP6}
			})
			st.HandleTCP(8, func(r *tcp.ForwarderRequest) { r.Complete(true) })
			// The client's MAC first (an ARP request and a neighbour
			// solicitation teach it), so that answers need no resolution.
			for _, fr := range [][]byte{seeds[0], seeds[11]} {
				pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(fr)})
				wire.InjectInbound(0, pkt)
				pkt.DecRef()
			}
			wire.Drain()
			pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(tc.frame)})
			wire.InjectInbound(0, pkt)
			pkt.DecRef()
			// A SYN's answer comes from the handler's goroutine.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out := wire.ReadContext(ctx)
			if out == nil {
				t.Fatalf("no answer to the seed frame")
			}
			defer out.DecRef()
			v := out.ToView()
			defer v.Release()
			b := v.AsSlice()
			eth := header.Ethernet(b)
			if eth.Type() != tc.wantEth {
				t.Fatalf("answer EtherType %#x, want %#x", eth.Type(), tc.wantEth)
			}
			var proto tcpip.TransportProtocolNumber
			switch tc.wantEth {
			case header.IPv4ProtocolNumber:
				proto = header.IPv4(b[header.EthernetMinimumSize:]).TransportProtocol()
			case header.IPv6ProtocolNumber:
				proto = header.IPv6(b[header.EthernetMinimumSize:]).TransportProtocol()
			}
			if proto != tc.wantProto {
				t.Errorf("answer protocol %d, want %d", proto, tc.wantProto)
			}
		})
	}
}

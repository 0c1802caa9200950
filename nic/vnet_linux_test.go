package nic

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/vipmux/vipmux/internal/leakcheck"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

var (
	testGWMAC     = net.HardwareAddr{0x02, 0, 0x5e, 0, 0x53, 0x01}
	testClientMAC = tcpip.LinkAddress("\x02\x00\x5e\x00\x53\x02")
	testGWIP      = tcpip.AddrFrom4([4]byte{198, 18, 0, 10})
	testClientIP  = tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
)

// vnetHarness is a gVisor stack on a vnetEndpoint whose two fds are
// datagram socketpairs: the test writes received messages (virtio-net
// header and frame) into rx and reads transmitted ones from tx.
type vnetHarness struct {
	s      *gstack.Stack
	rx, tx int    // the test's ends
	last   []byte // the last message readTCP returned
}

func newVnetHarness(t *testing.T) *vnetHarness {
	t.Helper()
	leakcheck.Goroutines(t)
	rxp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	txp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := newVnetEndpoint(rxp[0], txp[0], testGWMAC, 1500, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
	})
	t.Cleanup(func() {
		s.Close()
		s.Wait()
		ep.closeRx()
		for _, fd := range []int{rxp[0], rxp[1], txp[0], txp[1]} {
			unix.Close(fd)
		}
	})
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatalf("create nic: %s", err)
	}
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: testGWIP.WithPrefix()}, gstack.AddressProperties{}); err != nil {
		t.Fatalf("add address: %s", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	if err := s.AddStaticNeighbor(1, ipv4.ProtocolNumber, testClientIP, testClientMAC); err != nil {
		t.Fatalf("static neighbor: %s", err)
	}
	if err := unix.SetNonblock(txp[1], true); err != nil {
		t.Fatal(err)
	}
	return &vnetHarness{s: s, rx: rxp[1], tx: txp[1]}
}

// synFrame is a TCP SYN from the client to port 80 of the gateway with a
// correct checksum, or a wrong one if corrupt.
func synFrame(corrupt bool) []byte {
	const tcpLen = header.TCPMinimumSize
	b := make([]byte, header.EthernetMinimumSize+header.IPv4MinimumSize+tcpLen)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: testClientMAC, DstAddr: tcpip.LinkAddress(testGWMAC), Type: ipv4.ProtocolNumber})
	ip := header.IPv4(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(ip)), TTL: 64, Protocol: uint8(tcp.ProtocolNumber), SrcAddr: testClientIP, DstAddr: testGWIP})
	ip.SetChecksum(^ip.CalculateChecksum())
	th := header.TCP(ip[header.IPv4MinimumSize:])
	th.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 1000, DataOffset: tcpLen, Flags: header.TCPFlagSyn, WindowSize: 65535})
	sum := header.PseudoHeaderChecksum(tcp.ProtocolNumber, testClientIP, testGWIP, tcpLen)
	th.SetChecksum(^checksum.Checksum(th, sum))
	if corrupt {
		th.SetChecksum(th.Checksum() ^ 0x5a5a)
	}
	return b
}

// TestVnetChecksumTrust: a frame whose checksum is wrong is dropped unless
// the kernel vouched for it in the virtio-net header (DATA_VALID after it
// verified the checksum, NEEDS_CSUM on a segment that GRO coalesced from
// verified ones). A SYN to a port without listener shows it: the stack
// answers RST only to a SYN that it accepts.
func TestVnetChecksumTrust(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flags   byte
		corrupt bool
		wantRST bool
	}{
		{"good checksum, not verified by the kernel", 0, false, true},
		{"bad checksum, not verified by the kernel", 0, true, false},
		{"bad checksum, kernel says DATA_VALID", vnetDataValid, true, true},
		{"bad checksum, kernel says NEEDS_CSUM", vnetNeedsCsum, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newVnetHarness(t)
			msg := append(make([]byte, vnetHdrSize), synFrame(tc.corrupt)...)
			msg[0] = tc.flags
			if _, err := unix.Write(h.rx, msg); err != nil {
				t.Fatal(err)
			}
			got := h.readTCP(t, 2*time.Second)
			if tc.wantRST {
				if got == nil || !got.Flags().Contains(header.TCPFlagRst) {
					t.Fatalf("want a RST from the stack, got %v", got)
				}
				return
			}
			if got != nil {
				t.Fatalf("stack answered a corrupt SYN: flags %v", got.Flags())
			}
			if n := h.s.Stats().NICs.MalformedL4RcvdPackets.Value(); n != 1 {
				t.Errorf("malformed packets received = %d, want 1 (the corrupt SYN)", n)
			}
		})
	}
}

// TestVnetTransmitHeader: every frame the stack sends carries a virtio-net
// header, and the checksum is left to the kernel (NEEDS_CSUM with its
// position).
func TestVnetTransmitHeader(t *testing.T) {
	h := newVnetHarness(t)
	msg := append(make([]byte, vnetHdrSize), synFrame(false)...)
	if _, err := unix.Write(h.rx, msg); err != nil {
		t.Fatal(err)
	}
	if got := h.readTCP(t, 2*time.Second); got == nil {
		t.Fatal("no answer")
	}
	if h.last[0]&^vnetNeedsCsum != 0 || h.last[1] != 0 {
		t.Errorf("vnet header flags %#x gso type %d; want at most NEEDS_CSUM, no GSO for a RST", h.last[0], h.last[1])
	}
}

// readTCP waits up to d for a transmitted TCP segment and returns it (nil
// if none came); the whole message stays in h.last.
func (h *vnetHarness) readTCP(t *testing.T, d time.Duration) header.TCP {
	t.Helper()
	buf := make([]byte, 1<<16)
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		n, err := unix.Read(h.tx, buf)
		if err == unix.EAGAIN {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		msg := buf[:n]
		if len(msg) < vnetHdrSize+header.EthernetMinimumSize+header.IPv4MinimumSize+header.TCPMinimumSize {
			continue
		}
		eth := header.Ethernet(msg[vnetHdrSize:])
		if eth.Type() != ipv4.ProtocolNumber {
			continue
		}
		ip := header.IPv4(msg[vnetHdrSize+header.EthernetMinimumSize:])
		if ip.TransportProtocol() != tcp.ProtocolNumber {
			continue
		}
		h.last = append([]byte(nil), msg...)
		return header.TCP(ip.Payload())
	}
	return nil
}

// blockingDispatcher holds every delivered packet until release closes.
type blockingDispatcher struct {
	entered chan struct{}
	release chan struct{}
}

func (d *blockingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *gstack.PacketBuffer) {
	select {
	case d.entered <- struct{}{}:
	default:
	}
	<-d.release
}

func (d *blockingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gstack.PacketBuffer) {}

// TestVnetDetachDuringDelivery: Attach(nil) returns while the receive
// goroutine is inside a delivery, and Wait joins it once the delivery
// ends. gVisor detaches a link with the stack's lock held (removeNIC,
// Stack.Wait), and a delivery may need that lock (a RST's route): an
// Attach(nil) that waited for the goroutine deadlocked serve's shutdown
// when a segment arrived at that moment.
func TestVnetDetachDuringDelivery(t *testing.T) {
	leakcheck.Goroutines(t)
	rxp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	txp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := newVnetEndpoint(rxp[0], txp[0], testGWMAC, 1500, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ep.closeRx()
		for _, fd := range []int{rxp[0], rxp[1], txp[0], txp[1]} {
			unix.Close(fd)
		}
	}()
	d := &blockingDispatcher{entered: make(chan struct{}, 1), release: make(chan struct{})}
	ep.Attach(d)
	if _, err := unix.Write(rxp[1], append(make([]byte, vnetHdrSize), synFrame(false)...)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the frame was not delivered")
	}
	detached := make(chan struct{})
	go func() { ep.Attach(nil); close(detached) }()
	select {
	case <-detached:
	case <-time.After(5 * time.Second):
		close(d.release)
		<-detached
		t.Fatal("Attach(nil) waited for a delivery in progress (a deadlock under gVisor's stack lock)")
	}
	if ep.IsAttached() {
		t.Error("IsAttached after Attach(nil)")
	}
	close(d.release)
	ep.Wait() // joins the receive goroutine
}

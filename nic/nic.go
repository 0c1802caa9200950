// Package nic opens vipmux's front link: the one Ethernet interface, with one
// MAC address, that the userspace stack owns. It knows interfaces, MACs, MTUs
// and the kernel settings of the taken-over interface; it knows nothing of
// IP addresses or TCP, which belong to package stack.
//
// Two drivers exist:
//
//   - "afpacket" takes over an existing interface (a NIC, a VLAN, a veth) with
//     an AF_PACKET socket. The stack uses the interface's own MAC, so the
//     interface needs no promiscuous mode. The host kernel still sees every
//     frame, so Open tells it to stay out of the way: arp_ignore=8 (never
//     answer ARP there), IPv6 off, forwarding off. The interface should have no
//     kernel IP address; Open warns when it has one. The socket puts the
//     interface in all-multicast mode, so that IPv6 neighbour solicitations
//     (to solicited-node groups that the kernel, IPv6 off, never joins)
//     reach the stack.
//   - "tap" creates a TAP device; the stack sits behind it with a MAC of its
//     own. The operator bridges the TAP device to the front network.
//
// Offloads (Options.Offload, afpacket only): both packet sockets carry a
// virtio-net header (PACKET_VNET_HDR). The stack hands the kernel TCP
// segments of up to 64 KiB, which the kernel splits into frames and
// checksums (host GSO, as runsc does); and Open turns GRO on for the
// interface (on a veth this also moves its receive path to NAPI, where GRO
// runs), so the kernel coalesces the frames of a flow into large segments
// before the packet socket sees them. gVisor then handles one segment where
// it handled up to 45 frames. Open probes every step and falls back (logged
// at info) to one frame per read and write.
//
// Checksums: the stack verifies the checksum of every received frame,
// except, with offloads on, a frame whose virtio-net header says that the
// kernel has verified it (VIRTIO_NET_HDR_F_DATA_VALID: the NIC or GRO
// checked it) or that the checksum is partial because the frame never
// crossed a wire (VIRTIO_NET_HDR_F_NEEDS_CSUM: a segment that GRO coalesced
// from verified frames, or a frame from a local process or veth peer).
// Trust is per frame, never for the whole link: a frame that the kernel did
// not vouch for (GRO off and a driver that checks nothing, a corrupt frame
// that GRO refused to merge) is verified in software as without offloads. Ethernet's FCS alone would not do: it covers one hop, not a
// frame corrupted in a switch's memory. See vnetEndpoint.
//
// Without offloads, a veth peer on the same host may send frames with a
// partial checksum (the kernel leaves the rest to an offload that a veth
// never performs); the stack drops those as corrupt. On such a front link,
// turn transmit checksum offload off on the peer that sends to us
// (`ethtool -K PEER tx off`), exactly as the tests do. With offloads on,
// the virtio-net header marks such frames and the stack accepts them. A TAP
// device does not have this problem for frames that cross a bridge from a
// wire.
//
// Usage:
//
//	l, err := nic.Open(nic.Options{Driver: "afpacket", Interface: "eth1", Logger: log})
//	defer l.Close() // after the stack that uses l.Endpoint has stopped
package nic

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Drivers that Open accepts.
const (
	// DriverAFPacket takes over an existing interface with an AF_PACKET socket.
	DriverAFPacket = "afpacket"
	// DriverTAP creates a TAP device.
	DriverTAP = "tap"
)

// ErrUnknownDriver reports an Options.Driver that Open does not know.
var ErrUnknownDriver = errors.New("unknown nic driver")

// Options configures Open.
type Options struct {
	// Driver is DriverAFPacket or DriverTAP.
	Driver string
	// Interface is the interface to take over (afpacket) or the name of the
	// TAP device to create (tap).
	Interface string
	// MAC is the stack's link address. Nil means the interface's own MAC
	// (afpacket) or a random locally administered one (tap).
	MAC net.HardwareAddr
	// MTU is the link MTU. Zero means the interface's MTU (afpacket) or 1500
	// (tap).
	MTU uint32
	// Offload turns on segmentation offloads through a virtio-net header
	// (afpacket only): the stack hands the kernel TCP segments of up to 64
	// KiB to split (host GSO), and the kernel hands the stack coalesced
	// ones (GRO on the interface). Open falls back to one frame per
	// read and write, and logs so, where the kernel does not support it.
	Offload bool
	// Logger receives warnings about the interface's kernel settings.
	Logger *slog.Logger
}

// Link is an open front link.
//
// A link can fail while it is open: its receive loop stops on an error
// it cannot recover from, or its interface disappears (ip link del, its
// namespace removed, moved to another namespace). Then the stack receives
// nothing more, and the owner learns it from Done and Err: a gateway that
// goes on without its front link answers nothing and says nothing.
type Link struct {
	// Endpoint is the link endpoint to give the stack.
	Endpoint stack.LinkEndpoint
	// Name is the interface's name.
	Name string
	// MAC is the stack's link address on it.
	MAC net.HardwareAddr
	// MTU is the link MTU.
	MTU uint32
	// Offload reports whether segmentation offloads are on (see
	// Options.Offload).
	Offload bool

	close func() error

	// failMu guards failed and err (see Fail).
	failMu sync.Mutex
	failed chan struct{}
	err    error
}

// Done returns a channel that is closed when the link has failed (see
// Fail); it is never closed on a link that works, Close included.
func (l *Link) Done() <-chan struct{} {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	if l.failed == nil {
		l.failed = make(chan struct{})
	}
	return l.failed
}

// Err returns why the link failed, or nil while it works.
func (l *Link) Err() error {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	return l.err
}

// Fail marks the link failed with err, which should name the interface,
// and closes Done. The first call wins; later ones are ignored. The
// drivers call it; so may the owner of a Link built around an endpoint of
// its own (a test's channel endpoint).
func (l *Link) Fail(err error) {
	if err == nil {
		err = errors.New("front link failed")
	}
	l.failMu.Lock()
	defer l.failMu.Unlock()
	if l.err != nil {
		return
	}
	l.err = err
	if l.failed == nil {
		l.failed = make(chan struct{})
	}
	close(l.failed)
}

// Open opens the front link that opts describe. It needs CAP_NET_RAW
// (afpacket) and CAP_NET_ADMIN, not root: when the kernel refuses an
// operation, the error names the capability it needs and every required
// one that the process lacks.
func Open(opts Options) (*Link, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Interface == "" {
		return nil, errors.New("open nic: no interface given")
	}
	if opts.MAC != nil && len(opts.MAC) != 6 {
		return nil, fmt.Errorf("open nic %s: mac %s is not a 6-byte Ethernet address", opts.Interface, opts.MAC)
	}
	var (
		l   *Link
		err error
	)
	switch opts.Driver {
	case DriverAFPacket:
		l, err = openAFPacket(opts)
	case DriverTAP:
		if opts.Offload {
			opts.Logger.Info("segmentation offloads are afpacket only; the tap device reads and writes one frame at a time", "interface", opts.Interface)
		}
		l, err = openTAP(opts)
	default:
		return nil, fmt.Errorf("open nic %s: %w %q (want %q or %q)", opts.Interface, ErrUnknownDriver, opts.Driver, DriverAFPacket, DriverTAP)
	}
	if errors.Is(err, fs.ErrPermission) {
		err = withMissingCaps(err)
	}
	if err != nil {
		return nil, fmt.Errorf("open nic %s (%s): %w", opts.Interface, opts.Driver, err)
	}
	return l, nil
}

// Close releases the link's file descriptors and, for tap, removes the
// device. Call it after the stack using Endpoint has been closed and has
// waited for the endpoint. Close is idempotent.
func (l *Link) Close() error {
	if l.close == nil {
		return nil
	}
	c := l.close
	l.close = nil
	return c()
}

package nic

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// socketBuffer is the packet socket's receive and send buffer. A burst that
// arrives while the stack is busy waits here instead of being dropped.
const socketBuffer = 4 << 20

// openAFPacket takes over an existing interface with an AF_PACKET socket.
func openAFPacket(opts Options) (*Link, error) {
	link, err := netlink.LinkByName(opts.Interface)
	if err != nil {
		return nil, fmt.Errorf("find interface: %w", err)
	}
	attrs := link.Attrs()
	mac := opts.MAC
	if mac == nil {
		mac = attrs.HardwareAddr
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("interface has no Ethernet address (%q); is it an Ethernet interface?", attrs.HardwareAddr)
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = uint32(attrs.MTU)
	}
	if addrs, err := netlink.AddrList(link, netlink.FAMILY_V4); err == nil && len(addrs) > 0 {
		opts.Logger.Warn("front interface has kernel IPv4 addresses; the kernel may answer for them beside vipmux", "interface", opts.Interface, "addrs", fmt.Sprint(addrs))
	}

	// The packet socket first: without CAP_NET_RAW, Open fails before it
	// has changed anything about the interface.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, permError("open packet socket", err, "CAP_NET_RAW")
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: attrs.Index}); err != nil {
		return nil, permError("bind packet socket", err, "CAP_NET_RAW")
	}
	// Our own transmitted frames must not come back as received ones.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return nil, fmt.Errorf("set PACKET_IGNORE_OUTGOING: %w", err)
	}
	// IPv6 neighbour solicitations go to a solicited-node multicast group
	// per address (33:33:ff:xx:xx:xx), which a NIC's receive filter drops
	// unless someone joined it, and the kernel, with IPv6 off on the
	// interface, joins none. All-multicast mode (held by this socket, gone
	// when it closes) lets them reach the stack; the stack ignores groups
	// it has not joined.
	mreq := &unix.PacketMreq{Ifindex: int32(attrs.Index), Type: unix.PACKET_MR_ALLMULTI}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
		opts.Logger.Warn("cannot receive all multicast on the front interface; IPv6 clients may not reach the gateway's addresses", "interface", opts.Interface, "err", err)
	}
	setSocketBuffers(fd, opts)
	quietKernel(opts.Interface, opts.Logger)
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, permError("set interface up", err, "CAP_NET_ADMIN")
	}
	l, err := newFDLink(fd, opts.Interface, mac, mtu, attrs.Index)
	if err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

// setSocketBuffers makes the packet socket's buffers socketBuffer bytes.
// Beyond the kernel's rmem_max/wmem_max that takes CAP_NET_ADMIN
// (SO_RCVBUFFORCE); without it the buffers are as large as the limits allow,
// and a warning says so.
func setSocketBuffers(fd int, opts Options) {
	for _, o := range []struct {
		name         string
		force, plain int
	}{
		{"receive", unix.SO_RCVBUFFORCE, unix.SO_RCVBUF},
		{"send", unix.SO_SNDBUFFORCE, unix.SO_SNDBUF},
	} {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.force, socketBuffer)
		if err == nil {
			continue
		}
		opts.Logger.Warn("packet socket buffer limited by the kernel's maximum", "interface", opts.Interface,
			"buffer", o.name, "want", socketBuffer, "err", permError("set buffer size", err, "CAP_NET_ADMIN"))
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.plain, socketBuffer)
	}
}

// htons converts a short from host to network byte order.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

package nic

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// socketBuffer is the packet socket's receive and send buffer. A burst that
// arrives while the stack is busy waits here instead of being dropped.
const socketBuffer = 4 << 20

// openAFPacket takes over an existing interface with AF_PACKET sockets.
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

	// The packet sockets first: without CAP_NET_RAW, Open fails before it
	// has changed anything about the interface.
	var l *Link
	if opts.Offload {
		l, err = openOffload(link, mac, mtu, opts)
		if errors.Is(err, unix.EPERM) {
			return nil, err
		}
		if err != nil {
			opts.Logger.Info("segmentation offloads off: the kernel refused them; one frame per read and write", "interface", opts.Interface, "err", err)
		}
	}
	if l == nil {
		fd, err := packetSocket(attrs.Index, unix.ETH_P_ALL, false, opts)
		if err != nil {
			return nil, err
		}
		if l, err = newFDLink(fd, opts.Interface, mac, mtu, attrs.Index); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	// The interface outlives the gateway: its settings get their values
	// back on Close (issue 15: the host is left as found).
	l.restoreOnClose(quietKernel(opts.Interface, opts.Logger))
	if err := netlink.LinkSetUp(link); err != nil {
		l.Close()
		return nil, permError("set interface up", err, "CAP_NET_ADMIN")
	}
	return l, nil
}

// openOffload opens the front link with segmentation offloads (see
// vnetEndpoint): a receiving and a sending packet socket, both with a
// virtio-net header, and GRO on the interface.
func openOffload(link netlink.Link, mac net.HardwareAddr, mtu uint32, opts Options) (*Link, error) {
	log := opts.Logger
	name, ifindex := link.Attrs().Name, link.Attrs().Index
	rx, err := packetSocket(ifindex, unix.ETH_P_ALL, true, opts)
	if err != nil {
		return nil, err
	}
	if err := limitGRO(link); err != nil {
		unix.Close(rx)
		return nil, err
	}
	// Protocol 0: the sending socket receives no frame at all.
	tx, err := packetSocket(ifindex, 0, true, opts)
	if err != nil {
		unix.Close(rx)
		return nil, err
	}
	ep, err := newVnetEndpoint(rx, tx, mac, mtu, ifindex, log)
	if err != nil {
		unix.Close(rx)
		unix.Close(tx)
		return nil, err
	}
	// Without GRO the kernel hands over single frames: correct, only slower.
	gro, err := enableGRO(name)
	if err != nil {
		log.Info("receive offload (GRO) stays off on the front interface", "interface", name, "err", err)
	}
	log.Info("segmentation offloads on", "interface", name, "tx", "host GSO, 64 KiB segments", "rx_gro", gro)
	l := &Link{
		Endpoint: ep,
		Name:     name,
		MAC:      mac,
		MTU:      mtu,
		Offload:  true,
		close: func() error {
			ep.closeRx()
			return errors.Join(unix.Close(rx), unix.Close(tx))
		},
	}
	ep.fail = func(err error) { l.failReceive(ifindex, err) }
	l.watch(ifindex, ep.check)
	return l, nil
}

// limitGRO keeps coalesced segments within what the receive path and gVisor
// take: at most 64 KiB. An interface configured for BIG TCP (gro_max_size
// or gro_ipv4_max_size above 64 KiB) would hand over larger ones, which
// the receive buffer truncates (IPv4 ones also carry no valid length).
func limitGRO(link netlink.Link) error {
	a := link.Attrs()
	if a.GROMaxSize > maxGROSize {
		if err := netlink.LinkSetGROMaxSize(link, maxGROSize); err != nil {
			return fmt.Errorf("lower gro_max_size %d to %d: %w", a.GROMaxSize, maxGROSize, err)
		}
	}
	if a.GROIPv4MaxSize > maxGROSize {
		if err := netlink.LinkSetGROIPv4MaxSize(link, maxGROSize); err != nil {
			return fmt.Errorf("lower gro_ipv4_max_size %d to %d: %w", a.GROIPv4MaxSize, maxGROSize, err)
		}
	}
	return nil
}

// packetSocket opens an AF_PACKET socket bound to interface ifindex for
// protocol proto (ETH_P_ALL to receive every frame, 0 to receive none),
// with a virtio-net header on every message if vnet.
func packetSocket(ifindex int, proto uint16, vnet bool, opts Options) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
	if err != nil {
		return -1, permError("open packet socket", err, "CAP_NET_RAW")
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	// The virtio-net header goes on before bind, so that no frame arrives
	// without one.
	if vnet {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return -1, fmt.Errorf("set PACKET_VNET_HDR: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
		return -1, permError("bind packet socket", err, "CAP_NET_RAW")
	}
	// Our own transmitted frames must not come back as received ones.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return -1, fmt.Errorf("set PACKET_IGNORE_OUTGOING: %w", err)
	}
	if proto != 0 {
		// IPv6 neighbour solicitations go to a solicited-node multicast
		// group per address (33:33:ff:xx:xx:xx), which a NIC's receive
		// filter drops unless someone joined it, and the kernel, with IPv6
		// off on the interface, joins none. All-multicast mode (held by
		// this socket, gone when it closes) lets them reach the stack; the
		// stack ignores groups it has not joined.
		mreq := &unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_ALLMULTI}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
			opts.Logger.Warn("cannot receive all multicast on the front interface; IPv6 clients may not reach the gateway's addresses", "interface", opts.Interface, "err", err)
		}
	}
	setSocketBuffers(fd, opts)
	ok = true
	return fd, nil
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

package nic

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
)

// defaultTAPMTU is the MTU of a TAP device when Options.MTU is zero.
const defaultTAPMTU = 1500

// openTAP creates a TAP device and puts the stack behind it. The device
// lives while the process holds it open; Close removes it.
func openTAP(opts Options) (*Link, error) {
	if len(opts.Interface) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap name %q is longer than %d characters", opts.Interface, unix.IFNAMSIZ-1)
	}
	if _, err := netlink.LinkByName(opts.Interface); err == nil {
		return nil, fmt.Errorf("an interface named %s already exists; choose another tap name", opts.Interface)
	}
	mac := opts.MAC
	if mac == nil {
		var err error
		if mac, err = randomMAC(); err != nil {
			return nil, err
		}
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = defaultTAPMTU
	}
	fd, err := tun.OpenTAP(opts.Interface)
	if err != nil {
		return nil, fmt.Errorf("create tap device (needs CAP_NET_ADMIN and /dev/net/tun): %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	link, err := netlink.LinkByName(opts.Interface)
	if err != nil {
		return nil, fmt.Errorf("find new tap device: %w", err)
	}
	if err := netlink.LinkSetMTU(link, int(mtu)); err != nil {
		return nil, fmt.Errorf("set tap mtu %d: %w", mtu, err)
	}
	quietKernel(opts.Interface, opts.Logger)
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set tap up: %w", err)
	}
	l, err := newFDLink(fd, opts.Interface, mac, mtu, link.Attrs().Index)
	if err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

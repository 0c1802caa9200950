package nic

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// defaultTAPMTU is the MTU of a TAP device when Options.MTU is zero.
const defaultTAPMTU = 1500

// tunDevice is the kernel's TUN/TAP clone device.
const tunDevice = "/dev/net/tun"

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
	fd, err := createTAP(opts.Interface)
	if err != nil {
		return nil, err
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
		return nil, permError(fmt.Sprintf("set tap mtu %d", mtu), err, "CAP_NET_ADMIN")
	}
	// The device, and its settings with it, goes when fd is closed: there
	// is nothing to restore.
	_ = quietKernel(opts.Interface, opts.Logger)
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, permError("set tap up", err, "CAP_NET_ADMIN")
	}
	l, err := newFDLink(fd, opts.Interface, mac, mtu, link.Attrs().Index)
	if err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

// createTAP creates the TAP device name (no packet information header) and
// returns its non-blocking fd. The two steps fail for different reasons, so
// each error says which: opening the clone device needs read-write access
// to it (mode 0666 on a standard system), creating the device needs
// CAP_NET_ADMIN.
func createTAP(name string) (int, error) {
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, permError("open "+tunDevice, err, "read-write access to "+tunDevice)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tap name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, permError("create tap device", err, "CAP_NET_ADMIN")
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tap device non-blocking: %w", err)
	}
	return fd, nil
}

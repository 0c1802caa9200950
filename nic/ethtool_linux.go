package nic

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value of linux/ethtool.h.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with its union used as ifr_data.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool runs one ETHTOOL_G*/ETHTOOL_S* value command on interface name
// and returns the value the kernel reports back.
func ethtool(name string, cmd, value uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	// Both live on the heap: the kernel follows ifr.data.
	v := &ethtoolValue{cmd: cmd, data: value}
	ifr := &ifreqData{data: unsafe.Pointer(v)}
	copy(ifr.name[:unix.IFNAMSIZ-1], name)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// enableGRO turns generic receive offload on for interface name (on a veth
// this also switches its receive path to NAPI, which is where GRO runs) and
// reports whether it is on afterwards.
func enableGRO(name string) (bool, error) {
	if on, err := ethtool(name, unix.ETHTOOL_GGRO, 0); err == nil && on != 0 {
		return true, nil
	}
	if _, err := ethtool(name, unix.ETHTOOL_SGRO, 1); err != nil {
		return false, fmt.Errorf("enable gro on %s: %w", name, err)
	}
	on, err := ethtool(name, unix.ETHTOOL_GGRO, 0)
	if err != nil {
		return false, fmt.Errorf("read gro of %s: %w", name, err)
	}
	return on != 0, nil
}

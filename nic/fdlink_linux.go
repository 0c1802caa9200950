package nic

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
)

// gsoMaxSize is the largest segment that gVisor's TCP hands the link in one
// piece; the endpoint splits it in software (gVisor GSO). PERF-NOTES: this
// doubled gateway→client throughput on the prototype.
const gsoMaxSize = 1 << 16

// newFDLink wraps fd (a packet socket or a TAP fd) in gVisor's fdbased
// endpoint, which reads and writes whole Ethernet frames, and returns the
// Link that owns fd from then on. The link fails (Link.Fail) when the
// endpoint's receive loop stops on an error (on a packet socket, ENETDOWN
// too: the interface went down or away, and the loop does not resume), or
// when interface ifindex is gone.
func newFDLink(fd int, name string, mac net.HardwareAddr, mtu uint32, ifindex int) (*Link, error) {
	l := &Link{Name: name, MAC: mac, MTU: mtu, close: func() error { return unix.Close(fd) }}
	ep, err := fdbased.New(&fdbased.Options{
		FDs:                []int{fd},
		MTU:                mtu,
		EthernetHeader:     true,
		Address:            tcpip.LinkAddress(mac),
		PacketDispatchMode: fdbased.RecvMMsg,
		GSOMaxSize:         gsoMaxSize,
		GVisorGSOEnabled:   true,
		InterfaceIndex:     ifindex,
		// Called when the receive loop ends: with nil when the stack
		// detached the endpoint, with the error that stopped it otherwise.
		ClosedFunc: func(err tcpip.Error) {
			if err != nil {
				l.failReceive(ifindex, errors.New(err.String()))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("fdbased endpoint: %w", err)
	}
	l.Endpoint = ep
	l.watch(ifindex, nil)
	return l, nil
}

// randomMAC returns a random locally administered unicast MAC.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random mac: %w", err)
	}
	mac[0] = mac[0]&^0x01 | 0x02
	return mac, nil
}

// frontSysctls are the kernel settings that quietKernel changes on the
// front interface (under /proc/sys/net, %s the interface's name), and the
// values it writes.
var frontSysctls = []struct{ path, value string }{
	{"ipv4/conf/%s/arp_ignore", "8"},
	{"ipv4/conf/%s/forwarding", "0"},
	{"ipv6/conf/%s/disable_ipv6", "1"},
}

// quietKernel tells the host kernel to leave the interface to us: it must
// not answer ARP for our addresses (arp_ignore=8: answer nothing there), must
// not speak IPv6 on it, must not forward frames that it receives there.
// Failures are logged, not fatal: the stack works without them, only less
// cleanly.
//
// It returns restore, which writes back the values that it changed, so
// that the host is left as it was found (the Link's Close calls it once
// the link's sockets are closed). A setting that could not be read or
// written is not restored.
func quietKernel(name string, log *slog.Logger) (restore func()) {
	type saved struct{ path, old string }
	var changed []saved
	for _, s := range frontSysctls {
		p := filepath.Join("/proc/sys/net", fmt.Sprintf(s.path, name))
		old, rerr := os.ReadFile(p)
		if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // permError names the file
			}
			log.Warn("cannot set kernel setting of front interface", "interface", name, "sysctl", fmt.Sprintf(s.path, name), "value", s.value,
				"err", permError("write "+p, err, "CAP_NET_ADMIN"))
			continue
		}
		if prev := strings.TrimSpace(string(old)); rerr == nil && prev != s.value {
			changed = append(changed, saved{p, prev})
		}
	}
	return func() {
		for _, s := range slices.Backward(changed) {
			if err := os.WriteFile(s.path, []byte(s.old), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
				// ErrNotExist: the interface is gone, and its settings with it.
				log.Warn("cannot restore kernel setting of front interface", "interface", name, "sysctl", s.path, "value", s.old, "err", err)
			}
		}
	}
}

// restoreOnClose makes l's Close call restore after closing l's sockets.
func (l *Link) restoreOnClose(restore func()) {
	closeFn := l.close
	l.close = func() error {
		err := closeFn()
		restore()
		return err
	}
}

// permError wraps err, the failure of op, and names the capability that op
// needs when the kernel refused it for want of privilege (EPERM, EACCES):
//
//	open packet socket: operation not permitted (needs CAP_NET_RAW)
//
// errors.Is(err, fs.ErrPermission) holds for the result as for err.
func permError(op string, err error, capability string) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%s: %w (needs %s)", op, err, capability)
	}
	return fmt.Errorf("%s: %w", op, err)
}

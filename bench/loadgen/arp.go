package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// ARPResult is the outcome of the arp mode; times in microseconds, over
// the answered requests.
type ARPResult struct {
	Mode     string  `json:"mode"`
	Sent     int     `json:"sent"`
	Answered int     `json:"answered"`
	Lost     int     `json:"lost"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	MaxUs    float64 `json:"max_us"`
	// Slowest is the IP whose answer took MaxUs.
	Slowest string `json:"slowest_ip,omitempty"`
}

// arpTimes sends count ARP requests on iface, one at a time, each for a
// random IP of base..base+n-1, from the interface's MAC and first IPv4
// address, and times each answer: from the send to the receipt of the
// reply whose sender is the requested IP. It needs CAP_NET_RAW. A request
// without an answer within timeout is lost, not an error.
func arpTimes(ctx context.Context, iface, base string, n, count int, timeout time.Duration) (ARPResult, error) {
	if iface == "" {
		return ARPResult{}, errors.New("-iface is required")
	}
	if n < 1 || count < 1 {
		return ARPResult{}, fmt.Errorf("-n %d and -count %d must be positive", n, count)
	}
	first, err := netip.ParseAddr(base)
	if err != nil || !first.Is4() {
		return ARPResult{}, fmt.Errorf("-base %q: want an IPv4 address", base)
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return ARPResult{}, fmt.Errorf("-iface: %w", err)
	}
	src, err := firstIPv4(ifi)
	if err != nil {
		return ARPResult{}, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return ARPResult{}, fmt.Errorf("packet socket (needs CAP_NET_RAW): %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index}); err != nil {
		return ARPResult{}, fmt.Errorf("bind packet socket to %s: %w", iface, err)
	}
	// Short receive timeouts, so that ctx and the per-request timeout
	// are checked while no frame comes.
	tv := unix.NsecToTimeval((10 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return ARPResult{}, fmt.Errorf("receive timeout: %w", err)
	}
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	var (
		lat     []time.Duration
		r       = ARPResult{Mode: "arp"}
		buf     = make([]byte, 1600)
		slowest time.Duration
	)
	for range count {
		if ctx.Err() != nil {
			break
		}
		target := addN(first, rand.IntN(n))
		frame := arpRequest(ifi.HardwareAddr, src, target)
		sent := time.Now()
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			return ARPResult{}, fmt.Errorf("send ARP request for %s: %w", target, err)
		}
		r.Sent++
		d, ok, err := awaitReply(fd, buf, target, sent, timeout)
		if err != nil {
			return ARPResult{}, err
		}
		if !ok {
			r.Lost++
			continue
		}
		r.Answered++
		lat = append(lat, d)
		if d > slowest {
			slowest, r.Slowest = d, target.String()
		}
	}
	if len(lat) == 0 {
		return r, fmt.Errorf("no ARP request answered (%d sent)", r.Sent)
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	r.P50us, r.P99us, r.MaxUs = q(0.5), q(0.99), q(1)
	return r, nil
}

// awaitReply reads frames from fd until the ARP reply from target comes,
// and returns the time since sent; false after timeout.
func awaitReply(fd int, buf []byte, target netip.Addr, sent time.Time, timeout time.Duration) (time.Duration, bool, error) {
	want := target.As4()
	for time.Since(sent) < timeout {
		m, _, err := unix.Recvfrom(fd, buf, 0)
		now := time.Now()
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, false, fmt.Errorf("receive: %w", err)
		}
		f := buf[:m]
		// Ethernet (14) + ARP for IPv4 over Ethernet (28): an ARP reply
		// (op 2) whose sender protocol address is the target.
		if m < 42 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_ARP || binary.BigEndian.Uint16(f[20:22]) != 2 {
			continue
		}
		if [4]byte(f[28:32]) == want {
			return now.Sub(sent), true, nil
		}
	}
	return 0, false, nil
}

// arpRequest returns a broadcast Ethernet frame carrying an ARP request
// who-has target tell src (at mac).
func arpRequest(mac net.HardwareAddr, src, target netip.Addr) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // protocol: IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], 1) // request
	copy(a[8:14], mac)
	s, t := src.As4(), target.As4()
	copy(a[14:18], s[:])
	// target hardware address a[18:24] stays zero
	copy(a[24:28], t[:])
	return f
}

// firstIPv4 returns ifi's first IPv4 address: the sender of the requests.
func firstIPv4(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv4 address to send ARP requests from", ifi.Name)
}

// addN returns a + i.
func addN(a netip.Addr, i int) netip.Addr {
	b := a.As4()
	v := binary.BigEndian.Uint32(b[:]) + uint32(i)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

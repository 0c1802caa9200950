package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// registerLoop registers n mode-1 bindings p<i> → 198.18.0.(10+i) through
// the control API at base, one after another as fast as the gateway
// answers, and prints "ok IP" for each 200 (so a test knows exactly which
// registrations were acknowledged). It stops at the first failure (the
// gateway was killed), printing "ERR ...".
func registerLoop(base string, n int, timeout time.Duration) {
	if n < 1 || n > 240 {
		fail("register: -n %d: use 1..240 (198.18.0.10..249)", n)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	deadline := time.Now().Add(timeout)
	for i := range n {
		if time.Now().After(deadline) {
			fmt.Println("ERR timeout")
			os.Exit(1)
		}
		ip := fmt.Sprintf("198.18.0.%d", 10+i)
		body := fmt.Sprintf(`{"name":"p%d","ip":%q,"backend":"198.19.0.2"}`, i, ip)
		resp, err := c.Post(base+"/v1/register", "application/json", bytes.NewBufferString(body))
		if err != nil {
			fmt.Printf("ERR %s: %v\n", ip, err)
			os.Exit(1)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fmt.Printf("ERR %s: HTTP %d\n", ip, resp.StatusCode)
			os.Exit(1)
		}
		fmt.Printf("ok %s\n", ip)
	}
}

// synflood sends n TCP SYNs to target from srcIP with random source
// ports and sequence numbers through a raw socket, as fast as the kernel
// takes them. The destination must be in 198.18.0.0/15. Source ports stay
// below Linux's ephemeral range (32768..60999), so that the burst never
// collides with the 4-tuple of a legitimate connection from the same host.
func synflood(target, srcIP string, n int, timeout time.Duration) {
	dst, err := netip.ParseAddrPort(target)
	if err != nil || !netip.MustParsePrefix("198.18.0.0/15").Contains(dst.Addr()) {
		fail("synflood: %q: want IP:PORT in 198.18.0.0/15", target)
	}
	src, err := netip.ParseAddr(srcIP)
	if err != nil || !netip.MustParsePrefix("198.18.0.0/15").Contains(src) {
		fail("synflood: -src %q: want an IPv4 address in 198.18.0.0/15", srcIP)
	}
	if n < 1 || n > 100000 {
		fail("synflood: -n %d: use 1..100000", n)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		fail("synflood: raw socket: %v", err)
	}
	defer syscall.Close(fd)
	sa := &syscall.SockaddrInet4{Addr: dst.Addr().As4()}
	start := time.Now()
	deadline := start.Add(timeout)
	sent, errs := 0, 0
	pkt := make([]byte, 40)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		buildSYN(pkt, src, dst.Addr(), uint16(1024+rand.IntN(32768-1024)), dst.Port(), rand.Uint32())
		if err := syscall.Sendto(fd, pkt, 0, sa); err != nil {
			errs++
			if err == syscall.ENOBUFS || err == syscall.EAGAIN {
				time.Sleep(time.Millisecond)
			}
			continue
		}
		sent++
	}
	printJSON(map[string]any{"sent": sent, "errors": errs, "seconds": time.Since(start).Seconds()})
}

// buildSYN writes an IPv4 header and a TCP SYN (no options) into pkt[:40].
func buildSYN(pkt []byte, src, dst netip.Addr, sport, dport uint16, seq uint32) {
	clear(pkt)
	s, d := src.As4(), dst.As4()
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], 40)
	binary.BigEndian.PutUint16(pkt[4:], uint16(rand.Uint32()))
	pkt[8] = 64
	pkt[9] = syscall.IPPROTO_TCP
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
	binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:20], 0))
	tcp := pkt[20:40]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	var pseudo uint32
	for i := 0; i < 4; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(s[i:])) + uint32(binary.BigEndian.Uint16(d[i:]))
	}
	pseudo += syscall.IPPROTO_TCP + 20
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, pseudo))
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// sink accepts connections on addr and never reads from them: their
// receive windows fill and their senders stall. It exits after timeout.
func sink(addr string, timeout time.Duration) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fail("sink: %v", err)
	}
	time.AfterFunc(timeout, func() { os.Exit(0) })
	var held []net.Conn // never read, never closed until exit
	for len(held) < 10000 {
		c, err := ln.Accept()
		if err != nil {
			fail("sink: accept: %v", err)
		}
		c.(*net.TCPConn).SetReadBuffer(4096)
		held = append(held, c)
	}
	select {} // bounded by the AfterFunc above
}

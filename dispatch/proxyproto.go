package dispatch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/vipmux/vipmux/registry"
)

// proxyHeader returns the PROXY protocol header of version v for a
// connection from the client src to the front address dst, as the client
// addressed it. The header is built by github.com/pires/go-proxyproto,
// which follows the specification
// (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt): v1 is
// "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n", v2 the 12-byte signature,
// version 2 with command PROXY (0x21), family TCP over IPv4 (0x11) or IPv6
// (0x21), the address length and the addresses.
func proxyHeader(v registry.ProxyProtocol, src, dst netip.AddrPort) ([]byte, error) {
	var version byte
	switch v {
	case registry.ProxyV1:
		version = 1
	case registry.ProxyV2:
		version = 2
	default:
		return nil, fmt.Errorf("proxy protocol %q: not a version", string(v))
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !src.Addr().IsValid() || !dst.Addr().IsValid() || src.Addr().Is4() != dst.Addr().Is4() {
		return nil, fmt.Errorf("proxy protocol %s header for %v -> %v: addresses of one family needed", v, src, dst)
	}
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	if h.Command != proxyproto.PROXY {
		return nil, fmt.Errorf("proxy protocol %s header for %v -> %v: not a TCP connection", v, src, dst)
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("proxy protocol %s header for %v -> %v: %w", v, src, dst, err)
	}
	return b, nil
}

// errShortWrite reports a header that the backend connection took only in
// part.
var errShortWrite = errors.New("short write")

// writeProxyHeader writes the PROXY protocol header of v to bc in one
// write, before any of the client's bytes, and gives up at deadline.
func writeProxyHeader(bc net.Conn, v registry.ProxyProtocol, src, dst netip.AddrPort, deadline time.Time) error {
	b, err := proxyHeader(v, src, dst)
	if err != nil {
		return err
	}
	if err := bc.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("write proxy protocol %s header: %w", v, err)
	}
	n, err := bc.Write(b)
	if err == nil && n != len(b) {
		err = errShortWrite
	}
	if err != nil {
		return fmt.Errorf("write proxy protocol %s header: %w", v, err)
	}
	if err := bc.SetWriteDeadline(time.Time{}); err != nil {
		return fmt.Errorf("write proxy protocol %s header: %w", v, err)
	}
	return nil
}

package dispatch

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vipmux/vipmux/registry"
)

// v2sig is the PROXY protocol v2 signature, spelled out from the
// specification (section 2.2): \r\n\r\n\0\r\nQUIT\n.
var v2sig = []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestProxyHeader(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name     string
		v        registry.ProxyProtocol
		src, dst netip.AddrPort
		want     []byte
		wantErr  bool
	}{
		{
			name: "v1 IPv4",
			v:    registry.ProxyV1, src: ap("198.18.0.1:40000"), dst: ap("198.18.0.10:8080"),
			want: []byte("PROXY TCP4 198.18.0.1 198.18.0.10 40000 8080\r\n"),
		},
		{
			name: "v1 IPv6",
			v:    registry.ProxyV1, src: ap("[2001:db8::1]:65535"), dst: ap("[2001:db8:0:1::10]:443"),
			want: []byte("PROXY TCP6 2001:db8::1 2001:db8:0:1::10 65535 443\r\n"),
		},
		{
			name: "v1 IPv4-mapped IPv6 is IPv4",
			v:    registry.ProxyV1, src: ap("[::ffff:198.18.0.1]:1"), dst: ap("[::ffff:198.18.0.10]:80"),
			want: []byte("PROXY TCP4 198.18.0.1 198.18.0.10 1 80\r\n"),
		},
		{
			name: "v2 IPv4",
			v:    registry.ProxyV2, src: ap("198.18.0.1:40000"), dst: ap("198.18.0.10:8080"),
			want: cat(v2sig,
				[]byte{0x21},       // version 2, command PROXY
				[]byte{0x11},       // AF_INET, STREAM
				[]byte{0x00, 0x0C}, // 12 address bytes
				[]byte{198, 18, 0, 1}, []byte{198, 18, 0, 10},
				[]byte{0x9C, 0x40}, // 40000
				[]byte{0x1F, 0x90}, // 8080
			),
		},
		{
			name: "v2 IPv6",
			v:    registry.ProxyV2, src: ap("[2001:db8::1]:65535"), dst: ap("[2001:db8:0:1::10]:443"),
			want: cat(v2sig,
				[]byte{0x21},       // version 2, command PROXY
				[]byte{0x21},       // AF_INET6, STREAM
				[]byte{0x00, 0x24}, // 36 address bytes
				[]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01},
				[]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x10},
				[]byte{0xFF, 0xFF}, // 65535
				[]byte{0x01, 0xBB}, // 443
			),
		},
		{name: "none is not a version", v: registry.ProxyNone, src: ap("198.18.0.1:1"), dst: ap("198.18.0.10:80"), wantErr: true},
		{name: "unknown version", v: "v3", src: ap("198.18.0.1:1"), dst: ap("198.18.0.10:80"), wantErr: true},
		{name: "mixed families", v: registry.ProxyV2, src: ap("198.18.0.1:1"), dst: ap("[2001:db8::10]:80"), wantErr: true},
		{name: "missing address", v: registry.ProxyV1, dst: ap("198.18.0.10:80"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proxyHeader(tc.v, tc.src, tc.dst)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("proxyHeader(%q, %v, %v) = %q, nil; want an error", tc.v, tc.src, tc.dst, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("proxyHeader(%q, %v, %v) error: %v", tc.v, tc.src, tc.dst, err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("proxyHeader(%q, %v, %v) =\n% x\nwant (spec)\n% x", tc.v, tc.src, tc.dst, got, tc.want)
			}
		})
	}
}

// countingConn records writes and can fail them.
type countingConn struct {
	net.Conn
	writes [][]byte
	err    error
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(b))
	if c.err != nil {
		return 0, c.err
	}
	return len(b), nil
}

func (c *countingConn) SetWriteDeadline(time.Time) error { return nil }

func TestWriteProxyHeaderOneWrite(t *testing.T) {
	src, dst := netip.MustParseAddrPort("198.18.0.1:40000"), netip.MustParseAddrPort("198.18.0.10:8080")
	for _, v := range []registry.ProxyProtocol{registry.ProxyV1, registry.ProxyV2} {
		c := &countingConn{}
		if err := writeProxyHeader(c, v, src, dst, time.Now().Add(time.Second)); err != nil {
			t.Fatalf("writeProxyHeader(%s) error: %v", v, err)
		}
		want, _ := proxyHeader(v, src, dst)
		if len(c.writes) != 1 || !bytes.Equal(c.writes[0], want) {
			t.Errorf("writeProxyHeader(%s) wrote %q, want the header in one write: %q", v, c.writes, want)
		}
	}
	boom := errors.New("connection reset by peer")
	c := &countingConn{err: boom}
	if err := writeProxyHeader(c, registry.ProxyV2, src, dst, time.Now().Add(time.Second)); !errors.Is(err, boom) {
		t.Errorf("writeProxyHeader on a failing conn = %v, want it to wrap %v", err, boom)
	}
}

func BenchmarkProxyHeader(b *testing.B) {
	src, dst := netip.MustParseAddrPort("198.18.0.1:40000"), netip.MustParseAddrPort("198.18.0.10:8080")
	for _, v := range []registry.ProxyProtocol{registry.ProxyV1, registry.ProxyV2} {
		b.Run(string(v), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proxyHeader(v, src, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

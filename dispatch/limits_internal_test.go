package dispatch

import (
	"net/netip"
	"testing"
)

// TestSourceKey: handshakes are counted per IPv4 address and per IPv6 /64;
// an IPv4-mapped IPv6 address counts as its IPv4 address.
func TestSourceKey(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"ipv4", "198.18.0.2", "198.18.0.2"},
		{"ipv4-mapped", "::ffff:198.18.0.2", "198.18.0.2"},
		{"ipv6 host part dropped", "2001:db8:18::1234:5678", "2001:db8:18::"},
		{"ipv6 other /64", "2001:db8:18:1::1", "2001:db8:18:1::"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sourceKey(netip.MustParseAddr(tc.in)); got != netip.MustParseAddr(tc.want) {
				t.Errorf("sourceKey(%s) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

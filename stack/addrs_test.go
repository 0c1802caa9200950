package stack_test

import (
	"net/netip"
	"testing"

	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestAddrConversion(t *testing.T) {
	tests := []struct {
		name string
		in   tcpip.Address
		want netip.Addr
	}{
		{name: "ipv4", in: tcpip.AddrFrom4([4]byte{198, 18, 0, 10}), want: netip.MustParseAddr("198.18.0.10")},
		{name: "ipv6", in: tcpip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}), want: netip.MustParseAddr("2001:db8::1")},
		{name: "ipv4-mapped stays mapped", in: tcpip.AddrFrom16(netip.MustParseAddr("::ffff:198.18.0.10").As16()), want: netip.MustParseAddr("::ffff:198.18.0.10")},
		{name: "empty", in: tcpip.Address{}, want: netip.Addr{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := stack.FromAddr(tc.in)
			if got != tc.want {
				t.Fatalf("FromAddr(%v) = %v, want %v", tc.in, got, tc.want)
			}
			if !tc.want.IsValid() {
				return
			}
			if back := stack.ToAddr(got); back != tc.in {
				t.Errorf("ToAddr(%v) = %v, want %v", got, back, tc.in)
			}
		})
	}
}

// TestFromAddrAllocs pins that the conversion, which dispatch runs twice on
// every SYN, does not allocate.
func TestFromAddrAllocs(t *testing.T) {
	a := tcpip.AddrFrom4([4]byte{198, 18, 0, 10})
	var sink netip.Addr
	if n := testing.AllocsPerRun(100, func() { sink = stack.FromAddr(a) }); n != 0 {
		t.Errorf("FromAddr allocates %v times per call, want 0", n)
	}
	_ = sink
}

package stack_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
)

// TestConflictError: the error that a refused address comes back as reads
// the same as the API's old message, matches both sentinels through a
// wrap, and is found as a field error on "ip" (what the control API names).
func TestConflictError(t *testing.T) {
	tests := []struct {
		name    string
		err     *stack.ConflictError
		wantMsg string
	}{
		{
			name:    "ARP reply with the holder's MAC",
			err:     &stack.ConflictError{Addr: netip.MustParseAddr("198.18.0.20"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x99}},
			wantMsg: "198.18.0.20 is already in use on the front link by 02:00:00:00:00:99 (duplicate address)",
		},
		{
			name:    "NDP advertisement without a link-layer address",
			err:     &stack.ConflictError{Addr: netip.MustParseAddr("2001:db8:18::20")},
			wantMsg: "2001:db8:18::20 is already in use on the front link by another host (duplicate address)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.wantMsg {
				t.Errorf("Error() = %q, want %q", got, tc.wantMsg)
			}
			wrapped := fmt.Errorf("register web-b: %w", tc.err)
			for _, target := range []error{stack.ErrAddressInUse, registry.ErrConflict} {
				if !errors.Is(wrapped, target) {
					t.Errorf("errors.Is(%v, %v) = false, want true", wrapped, target)
				}
			}
			for _, target := range []error{registry.ErrInvalid, registry.ErrNotFound, stack.ErrNotInNetworks} {
				if errors.Is(wrapped, target) {
					t.Errorf("errors.Is(%v, %v) = true, want false", wrapped, target)
				}
			}
			var fn interface{ Field() string }
			if !errors.As(wrapped, &fn) || fn.Field() != "ip" {
				t.Fatalf("errors.As(%v, Field() string) = %v, want a field namer of \"ip\" (the API names the field)", wrapped, fn)
			}
		})
	}
}

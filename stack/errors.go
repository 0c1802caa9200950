package stack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vipmux/vipmux/registry"
)

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrNotInNetworks reports an address outside every front network.
	ErrNotInNetworks = errors.New("address outside the front networks")
	// ErrAddressInUse reports an address that another host on the front
	// link answered for while the stack probed it (duplicate address
	// detection). The error is a *ConflictError.
	ErrAddressInUse = errors.New("address in use on the front link")
)

// errClosed reports a Prepare interrupted by Close.
var errClosed = errors.New("stack closed")

// ConflictError is Prepare's error when duplicate address detection found
// another holder of Addr on the front link (see Options.DADProbes).
//
// errors.Is matches it with ErrAddressInUse, and with registry.ErrConflict:
// the table change that asked for Addr contradicts the link, as a
// registration contradicts the table. Its Field names the request field
// "ip", so that the control API answers 409 naming the field without
// knowing this package.
type ConflictError struct {
	// Addr is the address that another host holds.
	Addr netip.Addr
	// MAC is the holder's link address; nil when its answer did not carry
	// one (an NDP advertisement may leave it out).
	MAC net.HardwareAddr
}

// Error implements error: the address, the holder and what it means.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s is already in use on the front link by %s (duplicate address)", e.Addr, holderName(e.MAC))
}

// Is reports whether target is ErrAddressInUse or registry.ErrConflict.
func (e *ConflictError) Is(target error) bool {
	return target == ErrAddressInUse || target == registry.ErrConflict
}

// Field names the request field at fault, "ip" (control.FieldNamer).
func (e *ConflictError) Field() string { return "ip" }

// holderName is how a log line names the holder of a conflicting address.
func holderName(mac net.HardwareAddr) string {
	if len(mac) == 0 {
		return "another host"
	}
	return mac.String()
}

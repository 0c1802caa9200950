package stack

import "time"

// Limits of the ARP settings (Options and ARPSettings), which New and
// SetARP enforce. vipmux's config checks the [arp] keys against these
// same constants, so that a file that config accepts is one the stack
// takes.
const (
	// MaxGARPCount is the largest GARPCount: more announcements than this
	// only add broadcast traffic.
	MaxGARPCount = 100
	// MaxDADProbes is the largest DADProbes: each probe delays a
	// registration by DADInterval (without the registry's write lock:
	// other changes go on meanwhile).
	MaxDADProbes = 20
	// MinARPInterval and MaxARPInterval bound GARPInterval (when
	// GARPCount > 1) and DADInterval (when DADProbes > 0).
	MinARPInterval = 10 * time.Millisecond
	MaxARPInterval = 10 * time.Second
	// MinARPRefresh and MaxARPRefresh bound Refresh when it is not zero.
	MinARPRefresh = time.Second
	MaxARPRefresh = time.Hour
)

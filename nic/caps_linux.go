package nic

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// requiredCaps are the capabilities that Open needs: a packet socket
// (afpacket) and changing interfaces, their sysctls and TAP devices.
var requiredCaps = []struct {
	name string
	bit  uint
}{
	{"CAP_NET_ADMIN", unix.CAP_NET_ADMIN},
	{"CAP_NET_RAW", unix.CAP_NET_RAW},
}

// missingCaps returns the names of the requiredCaps that the process does
// not hold in its effective set; nil when it cannot tell.
func missingCaps() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil
	}
	var missing []string
	for _, c := range requiredCaps {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	return missing
}

// withMissingCaps adds to err, a permission error of Open, every required
// capability that the process lacks, so that one attempt names them all.
func withMissingCaps(err error) error {
	missing := missingCaps()
	if len(missing) == 0 {
		return err
	}
	return fmt.Errorf("%w; the process lacks %s: grant vipmux serve CAP_NET_RAW and CAP_NET_ADMIN (systemd: AmbientCapabilities=) or run it as root",
		err, strings.Join(missing, ", "))
}

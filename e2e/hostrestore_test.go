//go:build linux

package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// frontSysctls are the front interface's kernel settings that serve
// changes (nic's quietKernel), as sysctl names them for f0.
var frontSysctls = []string{
	"net.ipv4.conf.f0.arp_ignore",
	"net.ipv4.conf.f0.forwarding",
	"net.ipv6.conf.f0.disable_ipv6",
}

// readSysctls reads names in the gateway namespace.
func (tp *Topology) readSysctls(t *testing.T, names []string) map[string]string {
	t.Helper()
	out := must(t, "ip", append([]string{"netns", "exec", tp.GatewayNS, "sysctl", "-n"}, names...)...)
	vals := strings.Fields(out)
	if len(vals) != len(names) {
		t.Fatalf("sysctl -n %s: %q, want %d values", strings.Join(names, " "), out, len(names))
	}
	m := map[string]string{}
	for i, n := range names {
		m[n] = vals[i]
	}
	return m
}

// TestServeRestoresSysctls (issue 15 point 3): the sysctls that serve
// sets on the front interface (afpacket: an interface that outlives the
// gateway) get their previous values back when it stops. The values
// before are chosen to differ from the ones serve writes, so that a
// serve that changes nothing or restores nothing fails.
func TestServeRestoresSysctls(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}})
	must(t, "ip", "netns", "exec", tp.GatewayNS, "sysctl", "-q", "-w",
		"net.ipv4.conf.f0.arp_ignore=1", "net.ipv4.conf.f0.forwarding=1", "net.ipv6.conf.f0.disable_ipv6=0")
	before := tp.readSysctls(t, frontSysctls)
	want := map[string]string{"net.ipv4.conf.f0.arp_ignore": "1", "net.ipv4.conf.f0.forwarding": "1", "net.ipv6.conf.f0.disable_ipv6": "0"}
	if diff := cmp.Diff(want, before); diff != "" {
		t.Fatalf("sysctls before serve (-want +got):\n%s", diff)
	}

	g := tp.Start()
	running := tp.readSysctls(t, frontSysctls)
	wantRunning := map[string]string{"net.ipv4.conf.f0.arp_ignore": "8", "net.ipv4.conf.f0.forwarding": "0", "net.ipv6.conf.f0.disable_ipv6": "1"}
	if diff := cmp.Diff(wantRunning, running); diff != "" {
		t.Errorf("sysctls while serve runs (-want +got):\n%s", diff)
	}
	if code := g.Stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("vipmux serve exited %d after SIGTERM, want 0:\n%s", code, g.Log())
	}
	after := tp.readSysctls(t, frontSysctls)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("sysctls after serve stopped differ from before it started (-before +after):\n%s\nlog:\n%s", diff, g.Log())
	}
}

//go:build linux

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Gratuitous ARP and duplicate-address detection (issue 5), with the
// default [arp] settings: 3 announcements 200ms apart, 2 probes 100ms
// apart.

// TestGARPMovesStaleNeighbour: the client holds a stale neighbour entry for
// 198.18.0.10 at a foreign MAC; registering 198.18.0.10 moves it to the
// gateway's MAC within 1 s, without the client sending anything.
func TestGARPMovesStaleNeighbour(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a"}})
		tp.Start()
		const ip, foreign = "198.18.0.10", "02:00:00:00:00:99"
		must(t, "ip", "-n", tp.ClientNS, "neigh", "replace", ip, "lladdr", foreign, "dev", "c0", "nud", "stale")
		if n, ok := tp.Neigh(ip); !ok || n.LLAddr != foreign {
			t.Fatalf("client neighbour entry for %s before register = %+v (found %v), want lladdr %s", ip, n, ok, foreign)
		}
		tp.Register("web-a", ip, tp.Server("web-a").IP)
		last, took := tp.WaitNeighMAC(ip, tp.FrontMAC, time.Second)
		if last.LLAddr != tp.FrontMAC {
			t.Fatalf("client neighbour entry for %s 1s after register = %q %v, want lladdr %s (the gateway's, from gratuitous ARP)\ngateway log:\n%s", ip, last.LLAddr, last.State, tp.FrontMAC, tp.gwLog())
		}
		t.Logf("client entry for %s moved to %s %v within %v of register returning", ip, last.LLAddr, last.State, took.Round(time.Millisecond))
		// The entry is right: the client reaches the server through it.
		if got := tp.Get("http://" + ip + ":8080/"); got != "web-a" {
			t.Errorf("curl %s:8080 after gratuitous ARP = %q, want web-a", ip, got)
		}
	})
}

// TestDuplicateAddressRefused: another host on the front link owns
// 198.18.0.20; registering 198.18.0.20 fails with 409 naming the address
// and the host's MAC, and changes nothing. A free address still registers.
func TestDuplicateAddressRefused(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b"}})
		tp.Start()
		tp.Register("web-a", "198.18.0.10", tp.Server("web-a").IP)
		host := tp.AddFrontHost("h", "198.18.0.20", "02:00:00:00:00:20")
		before := tp.Status().Summary()

		// The CLI.
		start := time.Now()
		out, errOut, code := tp.CLI(nil, "register", "--name", "web-b", "--ip", host.IP, "--backend", tp.Server("web-b").IP)
		took := time.Since(start)
		msg := out + errOut
		if code == 0 {
			t.Errorf("vipmux register --ip %s (owned by %s at %s): exit 0, want non-zero\n%s", host.IP, host.NS, host.MAC, msg)
		}
		for _, want := range []string{"409", host.IP, host.MAC, "already in use"} {
			if !strings.Contains(msg, want) {
				t.Errorf("vipmux register --ip %s: output %q does not contain %q", host.IP, msg, want)
			}
		}
		t.Logf("register refused in %v: %s", took.Round(time.Millisecond), strings.TrimSpace(msg))

		// The API.
		body := fmt.Sprintf(`{"name":"web-b","ip":%q,"backend":%q}`, host.IP, tp.Server("web-b").IP)
		r := tp.API("POST", "/v1/register", body, "")
		if r.Code != 409 || r.Error.Field != "ip" || !strings.Contains(r.Error.Error, host.IP) || !strings.Contains(r.Error.Error, host.MAC) {
			t.Errorf("POST /v1/register %s = %d %s, want 409 with field ip naming %s and %s", body, r.Code, r.Body, host.IP, host.MAC)
		}

		if diff := cmp.Diff(before, tp.Status().Summary()); diff != "" {
			t.Errorf("status after the refused registrations (-before +after):\n%s", diff)
		}
		// A free address is probed, nobody answers, and it registers.
		tp.Register("web-b", "198.18.0.21", tp.Server("web-b").IP)
		if got := tp.Get("http://198.18.0.21:8080/"); got != "web-b" {
			t.Errorf("curl 198.18.0.21:8080 = %q, want web-b", got)
		}
		after := tp.Status().Summary()
		if !slices.Contains(after, "198.18.0.21:0 web-b@"+tp.Server("web-b").IP+"=active") {
			t.Errorf("status after registering 198.18.0.21 = %v, want it listed", after)
		}
	})
}

// TestGARPOnRestore: after a restart, the gateway announces the addresses
// that it restores from the state file, so that a client whose entry went
// stale at a foreign MAC meanwhile moves back to it without asking. (The
// afpacket driver only: with tap, the harness bridges the new TAP device
// after vipmux has created it, so the first announcements may go nowhere.)
func TestGARPOnRestore(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}})
	g := tp.Start()
	const ip, foreign = "198.18.0.10", "02:00:00:00:00:99"
	tp.Register("web-a", ip, tp.Server("web-a").IP)
	if code := g.Stop(syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("vipmux serve exited %d after SIGTERM, want 0", code)
	}
	must(t, "ip", "-n", tp.ClientNS, "neigh", "replace", ip, "lladdr", foreign, "dev", "c0", "nud", "stale")
	tp.Start()
	if last, _ := tp.WaitNeighMAC(ip, tp.FrontMAC, time.Second); last.LLAddr != tp.FrontMAC {
		t.Fatalf("client neighbour entry for %s 1s after the restarted gateway was ready = %q %v, want lladdr %s\ngateway log:\n%s", ip, last.LLAddr, last.State, tp.FrontMAC, tp.gwLog())
	}
	if got := tp.Get("http://" + ip + ":8080/"); got != "web-a" {
		t.Errorf("curl %s:8080 after restart = %q, want web-a", ip, got)
	}
}

//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// IPv6 front addresses (issue 7): the client speaks IPv6 from
// 2001:db8:18::1 on the front link, the gateway's stack answers NDP for the
// addresses it holds and announces them with unsolicited Neighbor
// Advertisements; backends are IPv4 or IPv6. Addresses from 2001:db8::/32
// only, inside the test's namespaces (Options.IPv6).

const (
	ip6A      = "2001:db8:18::10"
	ip6B      = "2001:db8:18::11"
	sharedIP6 = "2001:db8:18::100"
)

// url6 is the URL of port on the IPv6 address ip.
func url6(ip string, port int) string { return fmt.Sprintf("http://[%s]:%d/", ip, port) }

// linkAllmulti returns an interface's all-multicast count (ip -d link's
// "allmulti": how many users asked for all-multicast mode) in a namespace;
// ok is false when ip does not report it (kernel or iproute2 before 6.0).
func linkAllmulti(t testing.TB, ns, dev string) (n int, ok bool) {
	t.Helper()
	var links []struct {
		Allmulti *int `json:"allmulti"`
	}
	out := must(t, "ip", "-j", "-d", "-n", ns, "link", "show", dev)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j -d link show %s in %s: %q: %v", dev, ns, out, err)
	}
	if links[0].Allmulti == nil {
		return 0, false
	}
	return *links[0].Allmulti, true
}

// requireNDPAnswer fails the test unless the client's neighbour table holds
// ip at the front NIC's MAC, learnt through NDP, in a usable state.
func (tp *Topology) requireNDPAnswer(ip string) {
	tp.t.Helper()
	tp.requireARPAnswer(ip) // ip neigh shows both families
	n, _ := tp.Neigh(ip)
	for _, s := range n.State {
		if s == "FAILED" || s == "INCOMPLETE" {
			tp.t.Errorf("client neighbour entry for %s: state %v, want a resolved one", ip, n.State)
		}
	}
}

// TestIPv6Mode1: servers register IPv6 addresses (one with an IPv4
// backend, one with an IPv6 backend) beside an IPv4 one on the same NIC;
// an IPv6 client reaches each server through its address, byte-exact, and
// learns every IPv6 address at the front NIC's MAC through NDP; an
// unregistered IPv6 address gets no NDP answer; an address outside
// nic.networks is refused naming the field.
func TestIPv6Mode1(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b"}, IPv6: true})
		tp.Start()
		if driver == "afpacket" {
			// A real NIC filters the solicited-node groups that neither
			// the kernel (IPv6 off there) nor anyone else joined; vipmux
			// asks for all multicast.
			switch n, ok := linkAllmulti(t, tp.GatewayNS, "f0"); {
			case !ok:
				t.Logf("ip -d link does not show allmulti counts here (kernel or iproute2 before 6.0): all-multicast mode not checked")
			case n < 1:
				t.Errorf("f0 allmulti count while vipmux runs = %d, want >= 1 (all-multicast mode)", n)
			}
		}
		a, b := tp.Server("web-a"), tp.Server("web-b")
		tp.Register("web-a", ip6A, a.IP)          // IPv6 front, IPv4 backend
		tp.Register("web-b", ip6B, b.IP6)         // IPv6 front, IPv6 backend
		tp.Register("web-a", "198.18.0.10", a.IP) // IPv4 beside it

		tests := []struct {
			name, url, want string
		}{
			{"A port 8080", url6(ip6A, 8080), "web-a"},
			{"A port 9090", url6(ip6A, 9090), "web-a"},
			{"B port 8080", url6(ip6B, 8080), "web-b"},
			{"B port 9090", url6(ip6B, 9090), "web-b"},
			{"IPv4 beside", "http://198.18.0.10:8080/", "web-a"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				tp := tp.With(t)
				out, errOut, code := tp.Client(30*time.Second, "get", "-n", "3", tc.url)
				if want := strings.Repeat(tc.want+"\n", 3); code != 0 || out != want {
					t.Errorf("tcpclient get -n 3 %s = exit %d %q %s, want exit 0 %q", tc.url, code, out, errOut, want)
				}
			})
		}
		t.Run("data integrity", func(t *testing.T) {
			tp := tp.With(t)
			var r Transfer
			tp.ClientJSON(60*time.Second, &r, "download", "-n", "4000000", "-seed", "61", url6(ip6A, 8080))
			if want := patternSum(61, 4000000); r.SHA256 != want || r.Bytes != 4000000 {
				t.Errorf("download 4000000 bytes from %s: %d bytes sha256 %s err %q, want sha256 %s", ip6A, r.Bytes, r.SHA256, r.Err, want)
			}
			// Half-close through an IPv6 front to each backend family's raw
			// server on 7000, whose reply names it and what it got.
			for _, c := range []struct{ ip, server string }{{ip6A, "web-a"}, {ip6B, "web-b"}} {
				var r Transfer
				tp.ClientJSON(30*time.Second, &r, "halfclose", "-n", "100000", "-seed", "62", "["+c.ip+"]:7000")
				if want := c.server + " got 100000 bytes sha256=" + patternSum(62, 100000); r.Reply != want {
					t.Errorf("halfclose [%s]:7000: reply %q err %q, want %q", c.ip, r.Reply, r.Err, want)
				}
			}
		})
		for _, ip := range []string{ip6A, ip6B} {
			tp.requireNDPAnswer(ip)
		}
		tp.requireARPAnswer("198.18.0.10")

		// Nobody holds 2001:db8:18::50: no NDP answer, the dial fails.
		const free = "2001:db8:18::50"
		if r := tp.Dial("["+free+"]:8080", 1500*time.Millisecond); r.OK {
			t.Errorf("dial unregistered [%s]:8080 succeeded after %d ms, want failure", free, r.MS)
		}
		tp.requireNoARPAnswer(free)

		// The table shows the IPv6 bindings as the API takes them.
		if got, want := tp.Status().Summary(), []string{
			"198.18.0.10:0 web-a@198.19.0.2=active",
			ip6A + ":0 web-a@198.19.0.2=active",
			ip6B + ":0 web-b@" + b.IP6 + "=active",
		}; strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("vipmux status --json table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}

		table := tp.MustCLI("status")
		for _, want := range []string{ip6A, ip6B, b.IP6, "198.18.0.10"} {
			if !strings.Contains(table, want) {
				t.Errorf("vipmux status does not show %q:\n%s", want, table)
			}
		}

		// Outside nic.networks: 400 naming ip, from the API and the CLI.
		const outside = "2001:db8:99::10"
		r := tp.API("POST", "/v1/register", fmt.Sprintf(`{"name":"web-b","ip":%q,"backend":%q}`, outside, b.IP), "")
		if r.Code != 400 || r.Error.Field != "ip" || !strings.Contains(r.Error.Error, outside) {
			t.Errorf("POST /v1/register ip %s = %d %s, want 400 with field ip naming it", outside, r.Code, r.Body)
		}
		if out, errOut, code := tp.CLI(nil, "register", "--name", "web-b", "--ip", outside, "--backend", b.IP); code == 0 || !strings.Contains(out+errOut, outside) {
			t.Errorf("vipmux register --ip %s: exit %d %s%s, want non-zero naming the address", outside, code, out, errOut)
		}

		// Deregistering releases the address: new connections fail.
		tp.MustCLI("deregister", "--name", "web-b", "--ip", ip6B)
		if r := tp.Dial("["+ip6B+"]:8080", 1500*time.Millisecond); r.OK {
			t.Errorf("dial [%s]:8080 after deregister succeeded, want failure", ip6B)
		}
		if got := tp.Get(url6(ip6A, 8080)); got != "web-a" {
			t.Errorf("curl %s after deregistering %s = %q, want web-a", url6(ip6A, 8080), ip6B, got)
		}
	})
}

// TestIPv6Mode2Switch: mode 2 on an IPv6 shared address. Every request
// reaches the active server; after switch, every new one the new active;
// the client learnt the shared address at the front NIC's MAC.
func TestIPv6Mode2Switch(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b"}, IPv6: true,
			Extra: fmt.Sprintf("[shared]\naddress = %q", sharedIP6)})
		tp.Start()
		tp.RegisterPort("web-a", 8080, "active")
		// The standby's backend is IPv6: the dialer takes both families.
		tp.MustCLI("register", "--name", "web-b", "--port", "8080", "--backend", "["+tp.Server("web-b").IP6+"]:8080", "--state", "standby")
		url := url6(sharedIP6, 8080)

		if st := tp.Status(); st.Shared != sharedIP6 {
			t.Errorf("status shared = %q, want %s", st.Shared, sharedIP6)
		}
		tp.requireAll(url, 30, "web-a", "web-a active, web-b standby")
		tp.requireStates(sharedIP6, 8080, map[string]string{"web-a": "active", "web-b": "standby"}, "before switch")

		tp.MustCLI("switch", "--port", "8080", "--to", "web-b")
		tp.requireAll(url, 30, "web-b", "right after switch --to web-b")
		tp.requireStates(sharedIP6, 8080, map[string]string{"web-a": "standby", "web-b": "active"}, "after switch")

		// A port nobody registered on the shared address: RST at once.
		if r := tp.Dial("["+sharedIP6+"]:9090", 4*time.Second); r.OK || !strings.Contains(r.Err, "refused") {
			t.Errorf("dial [%s]:9090 (no member) = ok %v err %q, want connection refused", sharedIP6, r.OK, r.Err)
		}
		tp.requireNDPAnswer(sharedIP6)
	})
}

// TestIPv6UnsolicitedNAMovesStaleNeighbour: the client holds a stale
// neighbour entry for an IPv6 address at a foreign MAC; registering the
// address moves it to the gateway's MAC within 1 s through the gateway's
// unsolicited Neighbor Advertisements, without the client asking.
func TestIPv6UnsolicitedNAMovesStaleNeighbour(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a"}, IPv6: true})
		tp.Start()
		const foreign = "02:00:00:00:00:99"
		must(t, "ip", "-n", tp.ClientNS, "-6", "neigh", "replace", ip6A, "lladdr", foreign, "dev", "c0", "nud", "stale")
		if n, ok := tp.Neigh(ip6A); !ok || n.LLAddr != foreign {
			t.Fatalf("client neighbour entry for %s before register = %+v (found %v), want lladdr %s", ip6A, n, ok, foreign)
		}
		tp.Register("web-a", ip6A, tp.Server("web-a").IP)
		last, took := tp.WaitNeighMAC(ip6A, tp.FrontMAC, time.Second)
		if last.LLAddr != tp.FrontMAC {
			t.Fatalf("client neighbour entry for %s 1s after register = %q %v, want lladdr %s (the gateway's, from an unsolicited neighbour advertisement)\ngateway log:\n%s", ip6A, last.LLAddr, last.State, tp.FrontMAC, tp.gwLog())
		}
		t.Logf("client entry for %s moved to %s %v within %v of register returning", ip6A, last.LLAddr, last.State, took.Round(time.Millisecond))
		if got := tp.Get(url6(ip6A, 8080)); got != "web-a" {
			t.Errorf("curl %s after the advertisement = %q, want web-a", url6(ip6A, 8080), got)
		}
	})
}

// TestIPv6NAOnRestore: after a restart, the gateway advertises the IPv6
// addresses that it restores from the state file (unsolicited neighbour
// advertisements), so that a client whose entry went stale at a foreign MAC
// meanwhile moves back without asking. (afpacket only, as TestGARPOnRestore.)
func TestIPv6NAOnRestore(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, IPv6: true})
	g := tp.Start()
	const foreign = "02:00:00:00:00:99"
	tp.Register("web-a", ip6A, tp.Server("web-a").IP6)
	if code := g.Stop(syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("vipmux serve exited %d after SIGTERM, want 0", code)
	}
	must(t, "ip", "-n", tp.ClientNS, "-6", "neigh", "replace", ip6A, "lladdr", foreign, "dev", "c0", "nud", "stale")
	tp.Start()
	if last, _ := tp.WaitNeighMAC(ip6A, tp.FrontMAC, time.Second); last.LLAddr != tp.FrontMAC {
		t.Fatalf("client neighbour entry for %s 1s after the restarted gateway was ready = %q %v, want lladdr %s\ngateway log:\n%s", ip6A, last.LLAddr, last.State, tp.FrontMAC, tp.gwLog())
	}
	if got := tp.Get(url6(ip6A, 8080)); got != "web-a" {
		t.Errorf("curl %s after restart = %q, want web-a", url6(ip6A, 8080), got)
	}
}

// TestIPv6DuplicateAddressRefused: another host on the front link holds an
// IPv6 address; registering it fails with 409 naming the address and the
// host's MAC (NDP duplicate address detection), and a free one registers.
func TestIPv6DuplicateAddressRefused(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, IPv6: true})
	tp.Start()
	host := tp.AddFrontHost("h", "198.18.0.20", "02:00:00:00:00:20")
	const taken = "2001:db8:18::20"
	enableIPv6(t, host.NS, "h0")
	must(t, "ip", "-n", host.NS, "addr", "add", taken+"/64", "dev", "h0", "nodad")

	r := tp.API("POST", "/v1/register", fmt.Sprintf(`{"name":"web-a","ip":%q,"backend":%q}`, taken, tp.Server("web-a").IP), "")
	if r.Code != 409 || r.Error.Field != "ip" || !strings.Contains(r.Error.Error, taken) || !strings.Contains(r.Error.Error, host.MAC) {
		t.Errorf("POST /v1/register ip %s (held by %s) = %d %s, want 409 with field ip naming %s and %s", taken, host.NS, r.Code, r.Body, taken, host.MAC)
	}
	if len(tp.Status().Bindings) != 0 {
		t.Errorf("status after the refused registration: %v, want an empty table", tp.Status().Summary())
	}
	tp.Register("web-a", ip6A, tp.Server("web-a").IP)
	if got := tp.Get(url6(ip6A, 8080)); got != "web-a" {
		t.Errorf("curl %s = %q, want web-a", url6(ip6A, 8080), got)
	}
}

// The harness's IPv6 addresses are documentation ones.
func TestIPv6TestAddresses(t *testing.T) {
	doc := netip.MustParsePrefix("2001:db8::/32")
	for _, s := range []string{clientIP6, gatewayIP6, ip6A, ip6B, sharedIP6} {
		if !doc.Contains(netip.MustParseAddr(s)) {
			t.Errorf("%s is outside %s", s, doc)
		}
	}
	if p := netip.MustParsePrefix(frontNet6); !doc.Contains(p.Addr()) || p.Bits() < doc.Bits() {
		t.Errorf("frontNet6 %s is outside %s", p, doc)
	}
}

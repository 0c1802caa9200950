package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestClusterTable is issue 13's e2e case 6 for the shared table: two
// gateways (gw-a on f0, gw-b on a second front link f1) on one etcd (Debian's
// etcd-server, on the gateway namespace's loopback, heartbeat 50 ms and
// election 500 ms). Registrations and switches on the same ports are sent
// concurrently through both; at the end both tables are identical and hold
// every acknowledged registration, with at most one active member per port.
func TestClusterTable(t *testing.T) {
	requireRoot(t)
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		if inCI() {
			t.Fatalf("etcd not found (Debian package etcd-server; make deps installs it): %v", err)
		}
		t.Skip("etcd not found: apt-get install etcd-server")
	}
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web"}, Extra: "[shared]\naddress = \"198.18.0.100\""})
	// gw-b's front link: a second veth pair to the client. Its kernel stays
	// out of it, as of f0.
	must(t, "ip", "link", "add", "c1", "netns", tp.ClientNS, "type", "veth", "peer", "name", "f1", "netns", tp.GatewayNS)
	must(t, "ip", "netns", "exec", tp.GatewayNS, "sysctl", "-q", "-w", "net.ipv4.conf.f1.arp_ignore=8")
	must(t, "ip", "-n", tp.GatewayNS, "link", "set", "f1", "up")
	must(t, "ip", "-n", tp.ClientNS, "link", "set", "c1", "up")

	const etcdURL = "http://127.0.0.1:23790"
	tp.startProc("etcd", tp.GatewayNS, etcdBin,
		"--name", "e2e", "--data-dir", filepath.Join(tp.dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:23800", "--initial-advertise-peer-urls", "http://127.0.0.1:23800",
		"--initial-cluster", "e2e=http://127.0.0.1:23800",
		"--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error")
	cluster := func(node string) string {
		return fmt.Sprintf("\n[cluster]\netcd = [%q]\nnode = %q\nlease = \"1s\"\n", etcdURL, node)
	}
	const urlB = "http://127.0.0.1:7071"
	cfgA := tp.Config() + cluster("gw-a")
	cfgB := strings.NewReplacer(`interface = "f0"`, `interface = "f1"`, `listen = "127.0.0.1:7070"`, `listen = "127.0.0.1:7071"`).Replace(tp.Config()) + cluster("gw-b")
	if cfgB == tp.Config()+cluster("gw-b") || !strings.Contains(cfgB, "7071") || !strings.Contains(cfgB, `"f1"`) {
		t.Fatalf("gw-b's config did not get its own interface and port:\n%s", cfgB)
	}
	tp.StartConfig(tp.WriteConfig("gw-a.toml", cfgA)) // waits for gw-a's /healthz
	tp.StartConfig(tp.WriteConfig("gw-b.toml", cfgB))
	envB := []string{"VIPMUX_GATEWAY=" + urlB}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, errOut, code := tp.CLI(envB, "status")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gw-b's API not answering within 15 s: %s", errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}

	const (
		ports   = 4
		perGW   = 16
		workers = 4
	)
	backend := tp.Servers[0].IP + ":8080"
	type reg struct {
		port int
		name string
	}
	var (
		mu        sync.Mutex
		acked     []reg
		conflicts int
	)
	var wg sync.WaitGroup
	for gi, env := range [][]string{nil, envB} {
		for w := range workers {
			wg.Go(func() {
				for i := w; i < perGW; i += workers {
					port := 8001 + i%ports
					name := fmt.Sprintf("gw%d-s%d", gi, i)
					_, errOut, code := tp.CLI(env, "register", "--name", name, "--port", fmt.Sprint(port), "--backend", backend, "--state", "standby")
					if code == 0 && i%3 == 0 {
						_, errOut, code = tp.CLI(env, "switch", "--port", fmt.Sprint(port), "--to", name)
					}
					mu.Lock()
					switch {
					case code == 0:
						acked = append(acked, reg{port, name})
					case strings.Contains(errOut, "409") || strings.Contains(errOut, "conflict"):
						conflicts++ // refused after the retries: not acknowledged
					default:
						t.Errorf("register/switch %s on port %d through gateway %d: exit %d: %s", name, port, gi, code, errOut)
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	t.Logf("%d acknowledged, %d refused with 409 after retries", len(acked), conflicts)
	if len(acked) == 0 {
		t.Fatal("no registration acknowledged")
	}

	// The answers came after each gateway's own view had the change; the
	// other gateway's watch follows within moments.
	var a, b []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		a, b = tp.Status().Summary(), tp.Status(envB...).Summary()
		if slices.Equal(a, b) || time.Now().After(deadline) {
			break
		}
	}
	if !slices.Equal(a, b) {
		t.Fatalf("the two gateways' tables differ:\ngw-a: %v\ngw-b: %v", a, b)
	}
	st := tp.Status()
	for _, r := range acked {
		found := false
		for _, bd := range st.Bindings {
			if bd.Port != r.port {
				continue
			}
			for _, m := range bd.Members {
				found = found || m.Name == r.name
			}
		}
		if !found {
			t.Errorf("acknowledged registration of %s on port %d is missing from the tables", r.name, r.port)
		}
	}
	for _, bd := range st.Bindings {
		active := 0
		for _, m := range bd.Members {
			if m.State == "active" {
				active++
			}
		}
		if active > 1 {
			t.Errorf("port %d has %d active members, want at most 1", bd.Port, active)
		}
	}
}

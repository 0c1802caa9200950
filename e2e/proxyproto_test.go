//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PROXY protocol (issue 7, "Tell the backend who the client is"): a
// member registered with --proxy-protocol v1 or v2 gets a header on each
// backend connection, from which a kernel server (namesrv --proxy) learns
// the client's real address and port and the front address and port the
// client dialled; a member without the setting gets no header.

// proxyPort is where namesrv --proxy listens in every server namespace.
const proxyPort = 8180

// whoamiRE parses namesrv's GET /whoami answer, followed by curl's
// " local=IP:PORT" (the client's own side of the connection).
var whoamiRE = regexp.MustCompile(`^(\S+) proxy=(\S+) client=(\S+) front=(\S+) peer=(\S+)\n local=(\S+)$`)

// whoami is what a backend learnt about one client connection.
type whoami struct {
	server, proxy, client, front, peer string
	// local is the client's address as the client itself saw it.
	local string
}

// Whoami GETs /whoami on addr (front IP:port) from the client namespace.
func (tp *Topology) Whoami(addr string) whoami {
	tp.t.Helper()
	out, errOut, code := tp.Curl("--fail", "-w", " local=%{local_ip}:%{local_port}", "http://"+addr+"/whoami")
	if code != 0 {
		tp.t.Fatalf("client curl http://%s/whoami: exit %d: %s%s", addr, code, out, errOut)
	}
	m := whoamiRE.FindStringSubmatch(out)
	if m == nil {
		tp.t.Fatalf("client curl http://%s/whoami = %q, want %v", addr, out, whoamiRE)
	}
	return whoami{server: m[1], proxy: m[2], client: m[3], front: m[4], peer: m[5], local: m[6]}
}

func TestProxyProtocol(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b", "web-c"}, Extra: sharedConfig})
	for _, s := range tp.Servers {
		tp.startProc("namesrv-proxy-"+s.Name, s.NS, namesrvBin, "--name", s.Name, "--proxy", fmt.Sprintf(":%d", proxyPort))
	}
	for _, s := range tp.Servers {
		// Reached straight from the gateway's kernel: no header, so the
		// server reports the socket's own addresses.
		url := fmt.Sprintf("http://%s:%d/whoami", s.IP, proxyPort)
		var out string
		for range 100 {
			out, _, _ = tp.GatewayCurl("-sS", "--max-time", "1", url)
			if strings.HasPrefix(out, s.Name+" proxy=none client="+gatewayIP+":") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.HasPrefix(out, s.Name+" proxy=none client="+gatewayIP+":") {
			t.Fatalf("namesrv --proxy on %s never answered: %q", url, out)
		}
	}
	g := tp.Start()

	// Mode 1: one IP per server, each with its own setting.
	tp.MustCLI("register", "--name", "web-a", "--ip", "198.18.0.10", "--backend", tp.Server("web-a").IP, "--proxy-protocol", "v1")
	tp.MustCLI("register", "--name", "web-b", "--ip", "198.18.0.11", "--backend", tp.Server("web-b").IP, "--proxy-protocol", "v2")
	tp.MustCLI("register", "--name", "web-c", "--ip", "198.18.0.12", "--backend", tp.Server("web-c").IP)
	// Mode 2: web-a active with v2, web-b standby without.
	sharedBackend := func(name string) string { return fmt.Sprintf("%s:%d", tp.Server(name).IP, proxyPort) }
	tp.MustCLI("register", "--name", "web-a", "--port", fmt.Sprint(proxyPort), "--backend", sharedBackend("web-a"), "--state", "active", "--proxy-protocol", "v2")
	tp.MustCLI("register", "--name", "web-b", "--port", fmt.Sprint(proxyPort), "--backend", sharedBackend("web-b"), "--state", "standby")

	shared := fmt.Sprintf("%s:%d", sharedIP, proxyPort)
	check := func(when, front, wantServer, wantProxy string) {
		t.Helper()
		w := tp.Whoami(front)
		if !strings.HasPrefix(w.local, clientIP+":") {
			t.Fatalf("%s: client's local address %s, want %s:PORT", when, w.local, clientIP)
		}
		if w.server != wantServer || w.proxy != wantProxy {
			t.Errorf("%s: GET %s reached %s with proxy=%s, want %s with proxy=%s", when, front, w.server, w.proxy, wantServer, wantProxy)
		}
		if wantProxy == "none" {
			// No header: the server sees the gateway, and the client's
			// first bytes parsed as HTTP.
			if !strings.HasPrefix(w.client, gatewayIP+":") || w.client != w.peer {
				t.Errorf("%s: without a header the server saw client=%s peer=%s, want the gateway %s for both", when, w.client, w.peer, gatewayIP)
			}
			return
		}
		// The backend learnt the client's real address and port, and the
		// front address and port as the client addressed them, while the
		// socket's peer is the gateway.
		if w.client != w.local {
			t.Errorf("%s: backend learnt client %s, want %s (the client's own address and port)", when, w.client, w.local)
		}
		if w.front != front {
			t.Errorf("%s: backend learnt front %s, want %s", when, w.front, front)
		}
		if !strings.HasPrefix(w.peer, gatewayIP+":") {
			t.Errorf("%s: backend's socket peer %s, want the gateway %s", when, w.peer, gatewayIP)
		}
	}
	check("mode 1 v1", fmt.Sprintf("198.18.0.10:%d", proxyPort), "web-a", "v1")
	check("mode 1 v2", fmt.Sprintf("198.18.0.11:%d", proxyPort), "web-b", "v2")
	check("mode 1 none", fmt.Sprintf("198.18.0.12:%d", proxyPort), "web-c", "none")
	check("mode 2 active web-a v2", shared, "web-a", "v2")

	// status shows each member's setting, in the table and in --json.
	out := tp.MustCLI("status")
	for _, want := range []string{"PROXY", "198.18.0.10", " v1 ", " v2 ", " none "} {
		if !strings.Contains(out, want) {
			t.Errorf("vipmux status lacks %q:\n%s", want, out)
		}
	}
	got := proxySettings(t, tp)
	want := map[string]string{
		"198.18.0.10:0/web-a": "v1", "198.18.0.11:0/web-b": "v2", "198.18.0.12:0/web-c": "",
		fmt.Sprintf("%s:%d/web-a", sharedIP, proxyPort): "v2", fmt.Sprintf("%s:%d/web-b", sharedIP, proxyPort): "",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status --json proxy_protocol per member = %v, want %v", got, want)
	}

	// A switch to a member without the setting sends no header.
	tp.MustCLI("switch", "--port", fmt.Sprint(proxyPort), "--to", "web-b")
	check("mode 2 after switch to web-b (none)", shared, "web-b", "none")
	// And back: web-a kept its setting.
	tp.MustCLI("switch", "--port", fmt.Sprint(proxyPort), "--to", "web-a")
	check("mode 2 after switch back to web-a", shared, "web-a", "v2")

	// Bad values: the CLI names its flag, the API its field, and the table
	// does not change.
	before := proxySettings(t, tp)
	_, errOut, code := tp.CLI(nil, "register", "--name", "web-c", "--ip", "198.18.0.12", "--backend", tp.Server("web-c").IP, "--proxy-protocol", "v3")
	if code == 0 || !strings.Contains(errOut, "--proxy-protocol") {
		t.Errorf("register --proxy-protocol v3: exit %d, stderr %q; want non-zero naming --proxy-protocol", code, errOut)
	}
	r := tp.API("POST", "/v1/register", `{"name":"web-c","ip":"198.18.0.12","backend":"`+tp.Server("web-c").IP+`","proxy_protocol":"v3"}`, "")
	if r.Code != 400 || r.Error.Field != "proxy_protocol" || r.Error.Error == "" {
		t.Errorf("POST /v1/register proxy_protocol v3: %d %s; want 400 with field proxy_protocol", r.Code, r.Body)
	}
	if after := proxySettings(t, tp); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("refused requests changed the table: %v, was %v", after, before)
	}

	// The API sets it too, and registering again replaces it.
	r = tp.API("POST", "/v1/register", `{"name":"web-c","ip":"198.18.0.12","backend":"`+tp.Server("web-c").IP+`","proxy_protocol":"v2"}`, "")
	if r.Code != 200 {
		t.Fatalf("POST /v1/register proxy_protocol v2: %d %s", r.Code, r.Body)
	}
	check("mode 1 after API register with v2", fmt.Sprintf("198.18.0.12:%d", proxyPort), "web-c", "v2")
	tp.MustCLI("register", "--name", "web-a", "--ip", "198.18.0.10", "--backend", tp.Server("web-a").IP)
	check("mode 1 after register again without the flag", fmt.Sprintf("198.18.0.10:%d", proxyPort), "web-a", "none")

	// The settings survive a restart of the gateway (the state file).
	before = proxySettings(t, tp)
	if code := g.Stop(syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("vipmux serve exited %d after SIGTERM, want 0", code)
	}
	tp.StartConfig(g.Config)
	if after := proxySettings(t, tp); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("after a restart: proxy_protocol per member = %v, want %v", after, before)
	}
	check("mode 2 after restart", shared, "web-a", "v2")
	check("mode 1 v2 after restart", fmt.Sprintf("198.18.0.11:%d", proxyPort), "web-b", "v2")
}

// proxySettings returns every member's proxy_protocol from status --json,
// keyed "ip:port/name" ("" for none).
func proxySettings(t *testing.T, tp *Topology) map[string]string {
	t.Helper()
	out := tp.MustCLI("status", "--json")
	var st struct {
		Bindings []struct {
			IP      string `json:"ip"`
			Port    int    `json:"port"`
			Members []struct {
				Name          string `json:"name"`
				ProxyProtocol string `json:"proxy_protocol"`
			} `json:"members"`
		} `json:"bindings"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, b := range st.Bindings {
		for _, m := range b.Members {
			got[fmt.Sprintf("%s:%d/%s", b.IP, b.Port, m.Name)] = m.ProxyProtocol
		}
	}
	return got
}

// haproxyPort is where HAProxy accepts PROXY protocol connections in the
// server namespace of TestProxyProtocolHAProxy.
const haproxyPort = 8280

// TestProxyProtocolHAProxy checks the headers against a second, independent
// parser: HAProxy (Debian package haproxy) with accept-proxy reports the
// source and destination it took from the header.
func TestProxyProtocolHAProxy(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	if _, err := exec.LookPath("haproxy"); err != nil {
		msg := "needs haproxy (apt-get install -y haproxy; make deps installs it)"
		if inCI() {
			t.Fatal(msg + "; CI=true, so this is a failure, not a skip")
		}
		t.Skip(msg)
	}
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Extra: sharedConfig})
	cfg := tp.WriteConfig("haproxy.cfg", fmt.Sprintf(`defaults
	mode http
	timeout connect 5s
	timeout client 10s
	timeout server 10s
frontend pp
	bind :%d accept-proxy
	http-request return status 200 content-type text/plain lf-string "haproxy pp=%%[fc_rcvd_proxy] client=%%[src]:%%[src_port] front=%%[dst]:%%[dst_port]\n"
`, haproxyPort))
	start := time.Now()
	hp := tp.startProc("haproxy", tp.Server("web-a").NS, "haproxy", "-db", "-f", cfg)
	// Wait until HAProxy listens. It must refuse a connection without a
	// header, so probe with curl's own v1 header (--haproxy-protocol).
	url := fmt.Sprintf("http://%s:%d/", tp.Server("web-a").IP, haproxyPort)
	want := fmt.Sprintf("haproxy pp=1 client=%s:", gatewayIP)
	var out string
	for range 100 {
		if hp.exited() {
			t.Fatalf("haproxy exited %d:\n%s", hp.exitCode(), hp.output())
		}
		out, _, _ = tp.GatewayCurl("-sS", "--max-time", "1", "--haproxy-protocol", url)
		if strings.HasPrefix(out, want) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(out, want) {
		t.Fatalf("haproxy never answered curl --haproxy-protocol %s: %q, want %q...\n%s", url, out, want, hp.output())
	}
	if out, _, code := tp.GatewayCurl("-sS", "--max-time", "2", url); code == 0 && strings.HasPrefix(out, "haproxy") {
		t.Fatalf("haproxy answered a connection without a header: %q; the test could not tell a header from none", out)
	}
	t.Logf("haproxy ready after %v", time.Since(start).Round(time.Millisecond))
	tp.Start()

	tp.MustCLI("register", "--name", "web-a", "--ip", "198.18.0.10", "--backend", tp.Server("web-a").IP, "--proxy-protocol", "v1")
	tp.MustCLI("register", "--name", "web-a", "--port", fmt.Sprint(haproxyPort), "--backend", fmt.Sprintf("%s:%d", tp.Server("web-a").IP, haproxyPort), "--proxy-protocol", "v2")
	for _, tc := range []struct{ name, front string }{
		{"mode 1 v1", fmt.Sprintf("198.18.0.10:%d", haproxyPort)},
		{"mode 2 v2", fmt.Sprintf("%s:%d", sharedIP, haproxyPort)},
	} {
		out, errOut, code := tp.Curl("--fail", "-w", " local=%{local_ip}:%{local_port}", "http://"+tc.front+"/")
		if code != 0 {
			t.Errorf("%s: client curl http://%s/: exit %d: %s%s", tc.name, tc.front, code, out, errOut)
			continue
		}
		body, local, _ := strings.Cut(out, "\n local=")
		if !strings.HasPrefix(local, clientIP+":") {
			t.Fatalf("%s: client's local address %q, want %s:PORT", tc.name, local, clientIP)
		}
		if want := fmt.Sprintf("haproxy pp=1 client=%s front=%s", local, tc.front); body != want {
			t.Errorf("%s: haproxy learnt %q, want %q", tc.name, body, want)
		}
	}
}

//go:build linux

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Observe (issue 7): GET /metrics after real traffic from a kernel client
// through the real binary, per-connection debug log lines, and vipmux
// status --watch.

// scrape is one /metrics answer: every sample by its series as printed,
// e.g. `vipmux_bindings` or `vipmux_switches_total{ip="198.18.0.100",port="9090"}`.
type scrape map[string]float64

// parseScrape reads the Prometheus text format: every line that is not a
// comment is "SERIES VALUE".
func parseScrape(t testing.TB, body string) scrape {
	t.Helper()
	s := scrape{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics line %q: want SERIES VALUE", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		s[line[:i]] = v
	}
	return s
}

// Metrics scrapes the gateway's /metrics with token, requiring 200.
func (tp *Topology) Metrics(token string) scrape {
	tp.t.Helper()
	r := tp.API("GET", "/metrics", "", token)
	if r.Code != 200 {
		tp.t.Fatalf("GET /metrics: %d %s", r.Code, r.Body)
	}
	return parseScrape(tp.t, r.Body)
}

// series names a sample: name{k="v",...} with the labels in the order
// given, which must be sorted by name as the exposition prints them.
func series(name string, kv ...string) string {
	if len(kv) == 0 {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", kv[i], kv[i+1])
	}
	return name + "{" + b.String() + "}"
}

// metricsListen is [metrics] listen in TestMetrics (inside the gateway's
// namespace).
const metricsListen = "127.0.0.1:9100"

// TestMetrics sends real traffic through the gateway (N accepted
// connections with known byte counts, one refused by the backend, one to a
// port without an active member, a switch, a failover) and checks what GET
// /metrics reports for it, and the log lines.
func TestMetrics(t *testing.T) {
	const token = "metrics-e2e-token"
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Token: token,
		Extra: sharedConfig + "\n\n[log]\nlevel = \"debug\"\n\n[metrics]\nlisten = \"" + metricsListen + "\""})
	g := tp.Start()
	withToken := []string{"VIPMUX_TOKEN_FILE=" + tp.TokenFile()}
	cli := func(args ...string) {
		t.Helper()
		if out, errOut, code := tp.CLI(withToken, args...); code != 0 {
			t.Fatalf("vipmux %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	a, b := tp.Server("web-a"), tp.Server("web-b")
	cli("register", "--name", "web-a", "--ip", "198.18.0.10", "--backend", a.IP)         // the client's port: raw :7000
	cli("register", "--name", "web-b", "--ip", "198.18.0.11", "--backend", b.IP+":7999") // nothing listens there
	cli("register", "--name", "web-a", "--port", "9090", "--backend", a.IP+":9090", "--state", "active")
	cli("register", "--name", "web-b", "--port", "9090", "--backend", b.IP+":9090", "--state", "standby")
	cli("register", "--name", "web-b", "--port", "8080", "--backend", b.IP+":8080", "--state", "standby")

	// The metrics need the token like the rest of the API on the control
	// listener; [metrics] listen serves them (and nothing else) without.
	if r := tp.API("GET", "/metrics", "", ""); r.Code != 401 {
		t.Errorf("GET /metrics without the token: %d, want 401", r.Code)
	}
	for _, tc := range []struct {
		method, path string
		wantCode     int
	}{
		{"GET", "/metrics", 200},
		{"POST", "/metrics", 405},
		{"GET", "/v1/status", 404},
	} {
		out, errOut, code := tp.GatewayCurl("-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "-X", tc.method, "http://"+metricsListen+tc.path)
		if code != 0 || out != fmt.Sprint(tc.wantCode) {
			t.Errorf("%s http://%s%s without a token: curl exit %d, HTTP %s %s; want %d", tc.method, metricsListen, tc.path, code, out, errOut, tc.wantCode)
		}
	}

	// N connections to web-a, each sending a known number of bytes and
	// reading the server's one-line reply.
	const n = 5
	var sent, replied int64
	for i := range n {
		size := int64(1000 * (i + 1))
		var r Transfer
		tp.ClientJSON(30*time.Second, &r, "halfclose", "-n", fmt.Sprint(size), "-seed", fmt.Sprint(i), "198.18.0.10:7000")
		if r.Err != "" || r.Bytes != size || !strings.HasPrefix(r.Reply, fmt.Sprintf("web-a got %d bytes", size)) {
			t.Fatalf("halfclose %d bytes to 198.18.0.10:7000: %+v, want web-a's reply", size, r)
		}
		sent += r.Bytes
		replied += int64(len(r.Reply)) + 1 // the reply's newline
	}
	for _, addr := range []string{"198.18.0.11:80", sharedIP + ":8080"} {
		if r := tp.Dial(addr, 5*time.Second); r.OK || !strings.Contains(r.Err, "refused") {
			t.Errorf("dial %s: %+v, want connection refused", addr, r)
		}
	}
	cli("switch", "--port", "9090", "--to", "web-b")
	if got := tp.Get("http://" + sharedIP + ":9090/"); got != "web-b" {
		t.Errorf("after the switch, %s:9090 answered %q, want web-b", sharedIP, got)
	}

	mode1 := []string{"ip", "198.18.0.10", "member", "web-a", "port", "*"}
	with := func(base []string, kv ...string) []string { return append(append([]string{}, base...), kv...) }
	// The last connection's counters settle when its copy loops end, just
	// after the client saw EOF.
	var m scrape
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		m = tp.Metrics(token)
		if m[series("vipmux_connections_active", mode1...)] == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, tc := range []struct {
		series string
		want   float64
	}{
		{series("vipmux_connections_accepted_total", mode1...), n},
		{series("vipmux_connections_active", mode1...), 0},
		{series("vipmux_connections_receive_bytes_total", mode1...), float64(sent)},
		{series("vipmux_connections_transmit_bytes_total", mode1...), float64(replied)},
		{series("vipmux_connections_refused_total", with(mode1, "reason", "backend_refused")...), 0},
		{series("vipmux_connections_refused_total", "ip", "198.18.0.11", "member", "web-b", "port", "*", "reason", "backend_refused"), 1},
		{series("vipmux_connections_refused_total", "ip", "198.18.0.11", "member", "web-b", "port", "*", "reason", "dial_timeout"), 0},
		{series("vipmux_connections_accepted_total", "ip", "198.18.0.11", "member", "web-b", "port", "*"), 0},
		{series("vipmux_connections_refused_total", "ip", sharedIP, "member", "", "port", "8080", "reason", "no_active_member"), 1},
		{series("vipmux_switches_total", "ip", sharedIP, "port", "9090"), 1},
		{series("vipmux_failovers_total", "ip", sharedIP, "port", "9090"), 0},
		{series("vipmux_switches_total", "ip", sharedIP, "port", "8080"), 0},
		{series("vipmux_connections_accepted_total", "ip", sharedIP, "member", "web-b", "port", "9090"), 1},
		{series("vipmux_member_active", "ip", sharedIP, "member", "web-b", "port", "9090"), 1},
		{series("vipmux_member_active", "ip", sharedIP, "member", "web-a", "port", "9090"), 0},
		{series("vipmux_bindings"), 4},
		{series("vipmux_config_last_reload_successful"), 1},
		{series("vipmux_failbacks_total", "ip", sharedIP, "port", "9090"), 0},
	} {
		if got, ok := m[tc.series]; !ok || got != tc.want {
			t.Errorf("/metrics %s = %v (present %v), want %v", tc.series, got, ok, tc.want)
		}
	}
	for _, name := range []string{
		"vipmux_stack_arp_transmit_replies_total", // the client resolved every address it dialled
		"vipmux_stack_arp_receive_requests_total",
		"vipmux_stack_receive_packets_total",
		"vipmux_stack_transmit_packets_total",
		"vipmux_stack_tcp_transmit_resets_total",     // the two refusals
		"vipmux_backend_dial_duration_seconds_count", // a dial per connection
		"vipmux_state_save_duration_seconds_count",   // the registrations
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if got := m[name]; got <= 0 {
			t.Errorf("/metrics %s = %v, want > 0", name, got)
		}
	}
	if _, ok := m[series("vipmux_stack_dropped_packets_total", "reason", "tcp_max_in_flight")]; !ok {
		t.Errorf("/metrics has no vipmux_stack_dropped_packets_total{reason=\"tcp_max_in_flight\"}")
	}
	// Mode-1 members have no member_active or member_up: always 1.
	for s := range m {
		if (strings.HasPrefix(s, "vipmux_member_active{") || strings.HasPrefix(s, "vipmux_member_up{")) && strings.Contains(s, `port="*"`) {
			t.Errorf("/metrics has %s; mode-1 members have no such series", s)
		}
	}
	var build string
	for s := range m {
		if strings.HasPrefix(s, "vipmux_build_info{") {
			build = s
		}
	}
	if !strings.Contains(build, `goversion="go`) || !strings.Contains(build, `revision="`) || !strings.Contains(build, `version="`) {
		t.Errorf("/metrics vipmux_build_info = %q, want goversion, revision and version labels", build)
	}

	// The [metrics] listener serves the same figures.
	out, errOut, code := tp.GatewayCurl("-sS", "--max-time", "5", "--fail", "http://"+metricsListen+"/metrics")
	if code != 0 {
		t.Fatalf("GET http://%s/metrics: curl exit %d %s", metricsListen, code, errOut)
	}
	if got := parseScrape(t, out)[series("vipmux_connections_accepted_total", mode1...)]; got != n {
		t.Errorf("GET http://%s/metrics: vipmux_connections_accepted_total of web-a = %v, want %d", metricsListen, got, n)
	}

	// A member that leaves takes its series with it.
	cli("deregister", "--name", "web-b", "--ip", "198.18.0.11")
	for s := range tp.Metrics(token) {
		if strings.Contains(s, `ip="198.18.0.11"`) {
			t.Errorf("/metrics after web-b left 198.18.0.11 still has %s", s)
		}
	}

	// web-b, now active on 9090, dies: the health check fails over to
	// web-a, and that is counted as a failover, not a switch.
	tp.killServer(b)
	failovers := series("vipmux_failovers_total", "ip", sharedIP, "port", "9090")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if m = tp.Metrics(token); m[failovers] == 1 || time.Now().After(deadline) {
			break
		}
	}
	for _, tc := range []struct {
		series string
		want   float64
	}{
		{failovers, 1},
		{series("vipmux_switches_total", "ip", sharedIP, "port", "9090"), 1},
		{series("vipmux_member_up", "ip", sharedIP, "member", "web-b", "port", "9090"), 0},
		{series("vipmux_member_active", "ip", sharedIP, "member", "web-a", "port", "9090"), 1},
	} {
		if got, ok := m[tc.series]; !ok || got != tc.want {
			t.Errorf("/metrics after web-b died: %s = %v (present %v), want %v", tc.series, got, ok, tc.want)
		}
	}
	if got := m["vipmux_health_check_duration_seconds_count"]; got <= 0 {
		t.Errorf("/metrics vipmux_health_check_duration_seconds_count = %v after health checks ran, want > 0", got)
	}

	// The log: one line for the switch and one for the failover, and at
	// debug level one line per connection accepted and closed, with its
	// bytes.
	log := g.Log()
	for _, want := range []string{
		`msg="active member changed" binding=198.18.0.100:9090 from=web-a to=web-b cause=switch`,
		`msg="active member changed" binding=198.18.0.100:9090 from=web-b to=web-a cause=failover`,
		`msg="connection accepted" client=198.18.0.1:`,
		fmt.Sprintf(`bytes_to_backend=%d bytes_to_client=`, 1000*n),
		`msg="connection closed"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("gateway log has no %q:\n%s", want, log)
		}
	}
	if got := strings.Count(log, `msg="connection closed"`); got < n+1 {
		t.Errorf("gateway log has %d \"connection closed\" lines, want at least %d", got, n+1)
	}
}

// TestStatusWatch runs vipmux status --watch against the gateway, changes
// the table while it runs, and stops it with SIGINT (Ctrl-C).
func TestStatusWatch(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}})
	tp.Start()
	a, b := tp.Server("web-a"), tp.Server("web-b")
	tp.MustCLI("register", "--name", "web-a", "--ip", "198.18.0.10", "--backend", a.IP, "--ttl", "1h")

	w := tp.startProc("status-watch", tp.GatewayNS, vipmuxBin, "status", "--watch", "--interval", "200ms", "--gateway", tp.ControlURL())
	frames := func() int { return strings.Count(w.output(), "vipmux status  ") }
	waitOutput := func(what string, cond func(string) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(w.output()); time.Sleep(50 * time.Millisecond) {
			if w.exited() || time.Now().After(deadline) {
				t.Fatalf("vipmux status --watch: no %s within 10 s (exited %v); output:\n%s", what, w.exited(), w.output())
			}
		}
	}
	waitOutput("two tables", func(string) bool { return frames() >= 2 })
	out := w.output()
	for _, want := range []string{"IP", "PORT", "STATE", "SERVER", "BACKEND", "CONNS", "HEALTH", "LEASE", "198.18.0.10", "web-a", "active", "1h0m0s, "} {
		if !strings.Contains(out, want) {
			t.Errorf("vipmux status --watch output has no %q:\n%s", want, out)
		}
	}
	// A change of the table shows in a later refresh.
	tp.MustCLI("register", "--name", "web-b", "--ip", "198.18.0.11", "--backend", b.IP)
	before := frames()
	waitOutput("refresh showing web-b", func(o string) bool { return frames() > before && strings.Contains(o, "198.18.0.11") })

	code, elapsed, ok := w.stop(syscall.SIGINT, 5*time.Second)
	if !ok || code != 0 {
		t.Errorf("vipmux status --watch after SIGINT: exit %d after %v (exited %v), want 0", code, elapsed, ok)
	}

	// A bad interval is refused before anything is fetched.
	if out, errOut, code := tp.CLI(nil, "status", "--watch", "--interval", "10ms"); code == 0 || !strings.Contains(errOut, "--interval") {
		t.Errorf("vipmux status --watch --interval 10ms: exit %d %s%s, want an error naming --interval", code, out, errOut)
	}
}

// TestMetricsPerMember runs the gateway with [metrics] per_member =
// "mode2" and 30 mode-1 IPs (issue 15, point 10): the mode-1 members'
// connections are summed into one series per metric, the mode-2 members
// keep theirs, and no mode-1 IP appears in any vipmux_* series.
func TestMetricsPerMember(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"},
		Extra: sharedConfig + "\n\n[metrics]\nper_member = \"mode2\""})
	g := tp.Start()
	a, b := tp.Server("web-a"), tp.Server("web-b")
	const n = 30
	tp.registerMany(n, a.IP)
	tp.MustCLI("register", "--name", "web-a", "--port", "9090", "--backend", a.IP+":9090", "--state", "active")
	tp.MustCLI("register", "--name", "web-b", "--port", "9090", "--backend", b.IP+":9090", "--state", "standby")
	for _, url := range []string{"http://198.18.0.20:8080/", "http://198.18.0.21:8080/", "http://198.18.0.49:8080/", "http://" + sharedIP + ":9090/"} {
		if got := tp.Get(url); got != "web-a" {
			t.Fatalf("GET %s = %q, want web-a", url, got)
		}
	}
	m := tp.Metrics("")
	summed := []string{"ip", "", "member", "", "port", "*"}
	for _, tc := range []struct {
		series string
		want   float64
	}{
		{series("vipmux_connections_accepted_total", summed...), 3},
		{series("vipmux_connections_accepted_total", "ip", sharedIP, "member", "web-a", "port", "9090"), 1},
		{series("vipmux_member_active", "ip", sharedIP, "member", "web-b", "port", "9090"), 0},
		{series("vipmux_bindings"), n + 1},
	} {
		if got, ok := m[tc.series]; !ok || got != tc.want {
			t.Errorf("/metrics %s = %v (present %v), want %v", tc.series, got, ok, tc.want)
		}
	}
	for s := range m {
		if strings.HasPrefix(s, "vipmux_") && strings.Contains(s, `ip="198.18.0.`) && !strings.Contains(s, `ip="`+sharedIP+`"`) {
			t.Errorf("/metrics has %s: per_member = \"mode2\" leaves mode-1 IPs out", s)
		}
	}
	g.Stop(syscall.SIGTERM, 5*time.Second)
}

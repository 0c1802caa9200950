package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Reloading the config while the gateway runs (issue 7, "Change without
// dropping"): SIGHUP and `vipmux reload`.

// rewriteConfig writes the topology's config with extra in place of
// Options.Extra to the file the gateway g was started with.
func (tp *Topology) rewriteConfig(g *Gateway, extra string) {
	tp.t.Helper()
	saved := tp.opts.Extra
	tp.opts.Extra = extra
	text := tp.Config()
	tp.opts.Extra = saved
	tp.WriteConfig(strings.TrimPrefix(g.Config, tp.dir+"/"), text)
}

// hup sends SIGHUP to the gateway.
func (g *Gateway) hup() {
	g.tp.t.Helper()
	if err := g.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		g.tp.t.Fatalf("SIGHUP to vipmux serve: %v", err)
	}
}

// waitLog waits up to 10 s for the gateway's log to contain want n times
// in all, and returns the log.
func (g *Gateway) waitLog(t testing.TB, want string, n int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := g.Log()
		if strings.Count(log, want) >= n {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway log: %d lines with %q after 10 s, want %d:\n%s", strings.Count(log, want), want, n, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamsResult is the last line of `tcpclient streams`.
type streamsResult struct {
	Conns     int        `json:"conns"`
	Connected int        `json:"connected"`
	Results   []Transfer `json:"results"`
}

// TestReloadUnderLoad: 100 connections stream to a mode-2 member while the
// gateway reloads four times (SIGHUP and `vipmux reload`, one of them a
// bad file that is refused); none breaks, and every byte arrives.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	const n = 100
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
	g := tp.Start()
	tp.RegisterPort("web-a", 7000, "active")
	tp.RegisterPort("web-b", 7000, "standby")

	cmd := exec.Command("ip", "netns", "exec", tp.ClientNS, tcpclientBin, "streams", "-n", fmt.Sprint(n), "-seed", "700", "-interval", "50ms", sharedIP+":7000")
	cmd.Env = cleanEnv(nil)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tcpclient streams: %v", err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("tcpclient streams exited early")
			}
			return l
		case <-time.After(60 * time.Second):
			t.Fatalf("tcpclient streams: no output within 60 s")
		}
		return ""
	}
	var connected struct {
		Connected int      `json:"connected"`
		Errors    []string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(next()), &connected); err != nil || connected.Connected != n {
		t.Fatalf("tcpclient streams: %d of %d connected (%v), errors %v", connected.Connected, n, err, connected.Errors)
	}
	mark := func() int64 {
		t.Helper()
		fmt.Fprintln(stdin, "mark")
		var m struct {
			Sent int64 `json:"sent"`
		}
		if err := json.Unmarshal([]byte(next()), &m); err != nil {
			t.Fatalf("tcpclient streams mark: %v", err)
		}
		return m.Sent
	}
	time.Sleep(300 * time.Millisecond)
	before := mark()

	// 1. SIGHUP with new health, dispatch and log settings.
	tp.rewriteConfig(g, sharedConfig+"\n[health]\ninterval = \"200ms\"\n[dispatch]\ndial_timeout = \"2s\"\n[log]\nlevel = \"debug\"\n")
	g.hup()
	g.waitLog(t, "config reloaded", 1)
	// 2. vipmux reload with other changes.
	tp.rewriteConfig(g, sharedConfig+"\n[health]\ninterval = \"200ms\"\nfall = 3\n[arp]\ngarp_count = 1\n")
	out := tp.MustCLI("reload")
	if want := "reloaded: arp.garp_count, dispatch.dial_timeout, health.fall, log.level\n"; out != want {
		t.Errorf("vipmux reload: %q, want %q", out, want)
	}
	// 3. A bad file, by SIGHUP and by vipmux reload: refused, nothing
	// changes.
	tp.rewriteConfig(g, sharedConfig+"\n[health]\nrise = 0\n")
	g.hup()
	g.waitLog(t, "reload refused", 1)
	if _, errOut, code := tp.CLI(nil, "reload"); code == 0 || !strings.Contains(errOut, "health.rise: 0 is out of range") {
		t.Errorf("vipmux reload of a bad file: exit %d, stderr %q; want non-zero naming health.rise", code, errOut)
	}
	// 4. Back to the start.
	tp.rewriteConfig(g, sharedConfig)
	tp.MustCLI("reload")

	time.Sleep(300 * time.Millisecond)
	if after := mark(); after <= before {
		t.Errorf("bytes sent before the reloads %d, after %d: the streams stalled", before, after)
	}
	stdin.Close()
	var res streamsResult
	if err := json.Unmarshal([]byte(next()), &res); err != nil {
		t.Fatalf("tcpclient streams result: %v", err)
	}
	if len(res.Results) != n {
		t.Fatalf("tcpclient streams: %d results, want %d", len(res.Results), n)
	}
	broken := 0
	var total int64
	for i, r := range res.Results {
		want := fmt.Sprintf("web-a got %d bytes sha256=%s", r.Bytes, r.SHA256)
		if r.Err != "" || r.Reply != want {
			broken++
			if broken <= 5 {
				t.Errorf("connection %d: err %q, reply %q; want %q", i, r.Err, r.Reply, want)
			}
		}
		total += r.Bytes
	}
	t.Logf("%d connections through 4 reloads: %d broken, %d bytes in all", n, broken, total)
	if broken > 0 {
		t.Errorf("%d of %d connections broke or lost bytes across the reloads", broken, n)
	}
	log := g.Log()
	for _, want := range []string{
		`by=SIGHUP changed="dispatch.dial_timeout: \"3s\" -> \"2s\"; health.interval: \"100ms\" -> \"200ms\"; log.level: \"info\" -> \"debug\""`,
		"health.rise: 0 is out of range",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("gateway log lacks %s", want)
		}
	}
}

// TestReloadSettings checks that reloaded settings take effect: the log
// level and format, the health check interval, the shared address; and
// that a change of a key fixed at start-up is refused as a whole; the
// delayed ACK reloads and an out-of-range one is refused.
func TestReloadSettings(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
	g := tp.Start()
	url := "http://" + sharedIP + ":8080/"

	t.Run("log level and format", func(t *testing.T) {
		tp := tp.With(t)
		tp.RegisterPort("web-a", 8080, "active")
		if got := tp.Get(url); got != "web-a" {
			t.Fatalf("GET %s = %q, want web-a", url, got)
		}
		if log := g.Log(); strings.Contains(log, `msg="connection accepted"`) {
			t.Fatalf("a per-connection debug line at level info:\n%s", log)
		}
		tp.rewriteConfig(g, sharedConfig+"\n[log]\nlevel = \"debug\"\n")
		if out := tp.MustCLI("reload"); out != "reloaded: log.level\n" {
			t.Errorf("vipmux reload: %q, want %q", out, "reloaded: log.level\n")
		}
		tp.Get(url)
		g.waitLog(t, `msg="connection accepted"`, 1)

		tp.rewriteConfig(g, sharedConfig+"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n")
		tp.MustCLI("reload")
		tp.Get(url)
		g.waitLog(t, `"msg":"connection accepted"`, 1)
		tp.rewriteConfig(g, sharedConfig)
		tp.MustCLI("reload")
		tp.MustCLI("deregister", "--name", "web-a", "--port", "8080")
	})

	t.Run("health interval", func(t *testing.T) {
		tp := tp.With(t)
		// web-b's backend port is closed: every probe fails. Probed once
		// an hour, it stays up (fall = 2 needs a second probe).
		tp.rewriteConfig(g, sharedConfig+"\n[health]\ninterval = \"1h\"\n")
		tp.MustCLI("reload")
		tp.RegisterPort("web-a", 9090, "active")
		tp.MustCLI("register", "--name", "web-b", "--port", "9090", "--backend", tp.Server("web-b").IP+":9999", "--state", "standby")
		time.Sleep(time.Second)
		if _, down, _ := tp.healthStatus().member(sharedIP, 9090, "web-b"); down {
			t.Fatalf("web-b down after 1 s with interval 1h, want up (one failed probe of fall 2)")
		}
		tp.rewriteConfig(g, sharedConfig+"\n[health]\ninterval = \"100ms\"\n")
		if out := tp.MustCLI("reload"); out != "reloaded: health.interval\n" {
			t.Errorf("vipmux reload: %q, want %q", out, "reloaded: health.interval\n")
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, down, reason := tp.healthStatus().member(sharedIP, 9090, "web-b")
			if down && strings.HasPrefix(reason, "health check failed") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("web-b (backend port closed) not marked down within 10 s of reloading interval 100ms: down=%v reason=%q", down, reason)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Turning checks off brings the member up again.
		tp.rewriteConfig(g, sharedConfig+"\n[health]\nenabled = false\n")
		tp.MustCLI("reload")
		if _, down, reason := tp.healthStatus().member(sharedIP, 9090, "web-b"); down {
			t.Errorf("web-b after [health] enabled = false: down (%s), want up", reason)
		}
		tp.rewriteConfig(g, sharedConfig)
		tp.MustCLI("reload")
		tp.MustCLI("deregister", "--name", "web-a", "--port", "9090")
		tp.MustCLI("deregister", "--name", "web-b", "--port", "9090")
	})

	t.Run("refused", func(t *testing.T) {
		tp := tp.With(t)
		tp.RegisterPort("web-a", 8080, "active")
		before := tp.Status().Summary()
		for _, tc := range []struct {
			name, extra, config string
			wantErr             []string
		}{
			{
				name: "fixed key", extra: "[dispatch]\nmax_in_flight = 10\n[log]\nlevel = \"debug\"\n",
				wantErr: []string{"409 Conflict", "dispatch.max_in_flight: cannot change while the gateway runs", "in force: 8192, file: 10"},
			},
			{
				name: "the NIC", config: strings.Replace(tp.Config(), `interface = "f0"`, `interface = "f1"`, 1),
				wantErr: []string{"409 Conflict", `nic.interface: cannot change while the gateway runs`},
			},
			{
				name: "invalid value", extra: "[health]\ninterval = \"1ms\"\n",
				wantErr: []string{"400 Bad Request", "health.interval: 1ms is out of range"},
			},
			{
				name: "syntax", config: tp.Config() + "\n[log\n",
				wantErr: []string{"400 Bad Request", "toml: line"},
			},
			{
				name: "shared address with bindings on it", extra: "[shared]\naddress = \"198.18.0.101\"\n",
				wantErr: []string{"409 Conflict", "cannot move the shared address from 198.18.0.100 to 198.18.0.101 while it has bindings (198.18.0.100:8080)"},
			},
		} {
			if tc.config != "" {
				tp.WriteConfig(strings.TrimPrefix(g.Config, tp.dir+"/"), tc.config)
			} else {
				tp.rewriteConfig(g, tc.extra)
			}
			_, errOut, code := tp.CLI(nil, "reload")
			if code == 0 {
				t.Errorf("%s: vipmux reload exit 0, want non-zero", tc.name)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(errOut, want) {
					t.Errorf("%s: vipmux reload stderr %q, want it to contain %q", tc.name, errOut, want)
				}
			}
		}
		g.waitLog(t, "reload refused", 5)
		// Nothing of any refused file took effect (the first one's level
		// debug would log the GET), and the gateway serves.
		proxying := strings.Count(g.Log(), "connection accepted")
		if got := tp.Get(url); got != "web-a" {
			t.Errorf("GET %s after refused reloads = %q, want web-a", url, got)
		}
		time.Sleep(200 * time.Millisecond)
		if n := strings.Count(g.Log(), "connection accepted"); n != proxying {
			t.Errorf("a connection after the refused reloads logged at debug level: the refused [log] level took effect")
		}
		if after := tp.Status().Summary(); strings.Join(after, " ") != strings.Join(before, " ") {
			t.Errorf("table after refused reloads %v, want %v", after, before)
		}
		if st := tp.Status(); st.Shared != sharedIP {
			t.Errorf("shared address after a refused move = %q, want %s", st.Shared, sharedIP)
		}
		tp.rewriteConfig(g, sharedConfig)
		if out := tp.MustCLI("reload"); out != "reloaded: nothing changed\n" {
			t.Errorf("vipmux reload of the file in force: %q, want %q", out, "reloaded: nothing changed\n")
		}
		tp.MustCLI("deregister", "--name", "web-a", "--port", "8080")
	})

	t.Run("delayed ack", func(t *testing.T) {
		tp := tp.With(t)
		tp.RegisterPort("web-a", 8080, "active")
		for _, tc := range []struct{ extra, wantOut string }{
			{extra: "\n[dispatch]\ndelayed_ack = \"0s\"\n", wantOut: "reloaded: dispatch.delayed_ack\n"},
			{extra: "", wantOut: "reloaded: dispatch.delayed_ack\n"}, // back to the default, 2ms
		} {
			tp.rewriteConfig(g, sharedConfig+tc.extra)
			if out := tp.MustCLI("reload"); out != tc.wantOut {
				t.Errorf("vipmux reload: %q, want %q", out, tc.wantOut)
			}
			if got := tp.Get(url); got != "web-a" {
				t.Errorf("GET %s after reloading%q = %q, want web-a", url, tc.extra, got)
			}
		}
		tp.rewriteConfig(g, sharedConfig+"\n[dispatch]\ndelayed_ack = \"1s\"\n")
		_, errOut, code := tp.CLI(nil, "reload")
		if want := "dispatch.delayed_ack: 1s is out of range"; code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("vipmux reload of delayed_ack 1s: exit %d, stderr %q; want non-zero and %q", code, errOut, want)
		}
		tp.rewriteConfig(g, sharedConfig)
		tp.MustCLI("deregister", "--name", "web-a", "--port", "8080")
	})

	t.Run("shared address", func(t *testing.T) {
		tp := tp.With(t)
		const newShared = "198.18.0.101"
		tp.rewriteConfig(g, fmt.Sprintf("[shared]\naddress = %q\n", newShared))
		if out := tp.MustCLI("reload"); out != "reloaded: shared.address\n" {
			t.Errorf("vipmux reload: %q, want %q", out, "reloaded: shared.address\n")
		}
		if st := tp.Status(); st.Shared != newShared {
			t.Errorf("status shared = %q after the reload, want %s", st.Shared, newShared)
		}
		tp.RegisterPort("web-b", 8080, "active") // no --ip: the new shared address
		if got := tp.Get("http://" + newShared + ":8080/"); got != "web-b" {
			t.Errorf("GET the new shared address = %q, want web-b", got)
		}
		tp.requireARPAnswer(newShared)
		if r := tp.Dial(sharedIP+":8080", 2*time.Second); r.OK {
			t.Errorf("dial the old shared address %s:8080 after the move: connected, want a failure", sharedIP)
		}
	})
}

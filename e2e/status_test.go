package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStatusAtScale runs status on the real binary against a table of 60
// mode-1 IPs and a mode-2 port with a member that its health check marks
// down (issue 15, point 7): the summary line counts the whole table, the
// filters --ip, --port, --name and --down narrow the rows, and HEALTH is
// "-" for mode-1 rows.
func TestStatusAtScale(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
	g := tp.Start()
	a, b := tp.Server("web-a"), tp.Server("web-b")

	const n = 60
	tp.registerMany(n, a.IP)
	tp.MustCLI("register", "--name", "web-a", "--port", "8080", "--backend", a.IP+":8080", "--state", "active")
	// Nothing listens on web-b's 7999: its health check marks it down.
	tp.MustCLI("register", "--name", "web-b", "--port", "8080", "--backend", b.IP+":7999", "--state", "standby")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out := tp.MustCLI("status", "--down")
		if strings.Contains(out, "web-b") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web-b on port 8080 was not marked down within 10 s:\n%s", out)
		}
	}

	// 61 bindings (60 mode-1, one port), 62 members, web-b down, none
	// draining, 61 held IPs (the 60 and the shared address).
	const summary = "61 bindings, 62 members, 1 down, 0 draining, 61 held IPs"
	rows := func(out string) []string {
		var rs []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 3 && strings.HasPrefix(f[0], "198.18.0.") && (f[2] == "active" || f[2] == "standby") {
				rs = append(rs, f[0]+":"+f[1]+" "+f[3])
			}
		}
		return rs
	}
	for _, tc := range []struct {
		args     []string
		wantRows []string // nil: check only the count
		wantN    int
	}{
		{args: nil, wantN: 62},
		{args: []string{"--ip", "198.18.0.42"}, wantRows: []string{"198.18.0.42:* s22"}},
		{args: []string{"--port", "8080"}, wantRows: []string{sharedIP + ":8080 web-a", sharedIP + ":8080 web-b"}},
		{args: []string{"--name", "s59"}, wantRows: []string{"198.18.0.79:* s59"}},
		{args: []string{"--down"}, wantRows: []string{sharedIP + ":8080 web-b"}},
		{args: []string{"--name", "web-a", "--port", "8080"}, wantRows: []string{sharedIP + ":8080 web-a"}},
	} {
		t.Run(strings.Join(append([]string{"status"}, tc.args...), " "), func(t *testing.T) {
			out := tp.MustCLI(append([]string{"status"}, tc.args...)...)
			if first, _, _ := strings.Cut(out, "\n"); first != summary {
				t.Errorf("first line = %q, want %q", first, summary)
			}
			got := rows(out)
			if tc.wantRows != nil && strings.Join(got, ",") != strings.Join(tc.wantRows, ",") {
				t.Errorf("rows = %q, want %q\n%s", got, tc.wantRows, out)
			}
			if tc.wantRows == nil && len(got) != tc.wantN {
				t.Errorf("%d rows, want %d\n%s", len(got), tc.wantN, out)
			}
		})
	}

	// HEALTH: "-" on mode-1 rows, up/down on mode 2.
	out := tp.MustCLI("status", "--ip", "198.18.0.20")
	out += tp.MustCLI("status", "--port", "8080")
	col := -1
	health := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "IP" {
			for i, h := range f {
				if h == "HEALTH" {
					col = i
				}
			}
			continue
		}
		if col > 0 && len(f) > col && (f[2] == "active" || f[2] == "standby") {
			health[f[0]+":"+f[1]+" "+f[3]] = f[col]
		}
	}
	want := map[string]string{"198.18.0.20:* s0": "-", sharedIP + ":8080 web-a": "up", sharedIP + ":8080 web-b": "down"}
	if fmt.Sprint(health) != fmt.Sprint(want) {
		t.Errorf("HEALTH column = %v, want %v\n%s", health, want, out)
	}

	// Bad filters are refused before the gateway is asked, naming the flag.
	for _, args := range [][]string{{"status", "--ip", "198.18.0"}, {"status", "--port", "70000"}} {
		if _, errOut, code := tp.CLI(nil, args...); code != 1 || !strings.Contains(errOut, args[1]) {
			t.Errorf("vipmux %s: exit %d, want 1 naming %s\nstderr: %s", strings.Join(args, " "), code, args[1], errOut)
		}
	}
	g.Stop(syscall.SIGTERM, 5*time.Second)
}

// TestEventsFollow runs vipmux events --follow --json on the real binary
// (issue 15, point 7): it streams the table's changes as they happen, one
// JSON object per line, and exits 0 on SIGINT; without --follow, events
// prints the recent automatic changes.
func TestEventsFollow(t *testing.T) {
	const token = "events-e2e-token"
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Token: token, Extra: sharedConfig})
	g := tp.Start()
	withToken := []string{"VIPMUX_TOKEN_FILE=" + tp.TokenFile()}
	cli := func(args ...string) {
		t.Helper()
		if out, errOut, code := tp.CLI(withToken, args...); code != 0 {
			t.Fatalf("vipmux %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	a, b := tp.Server("web-a"), tp.Server("web-b")
	follow := tp.startProc("events-follow", tp.GatewayNS, vipmuxBin, "events", "--follow", "--json",
		"--gateway", tp.ControlURL(), "--token-file", tp.TokenFile())

	// The follower is connected once it shows a change: register probes
	// until one shows up.
	for i := 0; ; i++ {
		name := fmt.Sprintf("probe-%d", i)
		cli("register", "--name", name, "--ip", fmt.Sprintf("198.18.0.%d", 200+i), "--backend", a.IP)
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(follow.output(), `"member":"`+name+`"`) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if strings.Contains(follow.output(), `"member":"`+name+`"`) {
			break
		}
		if i == 10 || follow.exited() {
			t.Fatalf("vipmux events --follow showed none of %d registrations:\n%s", i+1, follow.output())
		}
	}
	before := len(strings.Split(strings.TrimSpace(follow.output()), "\n"))

	cli("register", "--name", "web-a", "--port", "9090", "--backend", a.IP+":9090", "--state", "active")
	cli("register", "--name", "web-b", "--port", "9090", "--backend", b.IP+":9090", "--state", "standby")
	cli("switch", "--port", "9090", "--to", "web-b")
	cli("deregister", "--name", "web-a", "--port", "9090")
	want := []string{
		"198.18.0.100:9090 web-a registered active",
		"198.18.0.100:9090 web-b registered standby",
		"198.18.0.100:9090 web-a standby standby",
		"198.18.0.100:9090 web-b active active",
		"198.18.0.100:9090 web-a removed ",
	}
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = got[:0]
		lines := strings.Split(strings.TrimSpace(follow.output()), "\n")
		for _, l := range lines[before:] {
			var c struct{ Binding, Member, What, State string }
			if err := json.Unmarshal([]byte(l), &c); err != nil {
				t.Fatalf("events --follow --json line %q: %v", l, err)
			}
			got = append(got, c.Binding+" "+c.Member+" "+c.What+" "+c.State)
		}
		if len(got) >= len(want) {
			break
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events --follow --json after register, register, switch, deregister:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if code, _, ok := follow.stop(syscall.SIGINT, 5*time.Second); !ok || code != 0 {
		t.Errorf("vipmux events --follow after SIGINT: exit %d (exited %v), want 0", code, ok)
	}

	// Without --follow: the recent automatic changes (none yet).
	out, errOut, code := tp.CLI(withToken, "events")
	if code != 0 || !strings.Contains(out, "no automatic changes yet") {
		t.Errorf("vipmux events: exit %d, want 0 and no changes\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	g.Stop(syscall.SIGTERM, 5*time.Second)
}

// registerMany registers n mode-1 servers, s0 on 198.18.0.20 and on up,
// all with backend, in one `register --file`.
func (tp *Topology) registerMany(n int, backend string) {
	tp.t.Helper()
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, "--name s%d --ip 198.18.0.%d --backend %s\n", i, 20+i, backend)
	}
	file := filepath.Join(tp.dir, "servers.txt")
	if err := os.WriteFile(file, []byte(lines.String()), 0o600); err != nil {
		tp.t.Fatal(err)
	}
	tp.MustCLI("register", "--file", file)
}

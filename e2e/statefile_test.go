//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stateConfig is tp's config with the state file at path instead of the
// topology's default.
func stateConfig(tp *Topology, name, path string) string {
	return tp.WriteConfig(name, strings.Replace(tp.Config(), filepath.Join(tp.dir, "state.json"), path, 1))
}

// TestStateDirRemoved (issue 12 point 9): the state directory removed
// while serving (rm -rf, as a careless cleanup would) is noticed on the next
// save, which recreates it with a full snapshot: after a restart the table
// holds every binding, those registered before the removal too.
func TestStateDirRemoved(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Extra: "[arp]\ndad_probes = 0"})
	dir := filepath.Join(tp.dir, "lib")
	statePath := filepath.Join(dir, "state.json")
	cfg := stateConfig(tp, "state-removed.toml", statePath)
	g := tp.StartConfig(cfg)
	be := tp.Server("web-a").IP
	tp.Register("web-a", "198.18.0.10", be)
	tp.Register("web-a", "198.18.0.11", be)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	tp.Register("web-a", "198.18.0.12", be)
	if _, err := os.Stat(statePath); err != nil {
		t.Errorf("state file after rm -rf of its directory and a registration: %v; want it written again", err)
	}
	if code := g.Stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("gateway exited %d after SIGTERM, want 0\n%s", code, g.Log())
	}
	tp.StartConfig(cfg)
	want := []string{"198.18.0.10:0 web-a@" + be + "=active", "198.18.0.11:0 web-a@" + be + "=active", "198.18.0.12:0 web-a@" + be + "=active"}
	if got := tp.Status().Summary(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table after rm -rf of the state directory, a registration and a restart:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestStateLocked (issue 12 point 9): a second `serve` on the state path
// of a running one is refused before it touches anything (not even with
// --reset-state, which would move the running gateway's files aside): it
// exits non-zero naming the path and the running gateway's pid, and the
// first one goes on serving.
func TestStateLocked(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Extra: "[arp]\ndad_probes = 0"})
	statePath := filepath.Join(tp.dir, "lib", "state.json")
	g := tp.StartConfig(stateConfig(tp, "first.toml", statePath))
	tp.Register("web-a", "198.18.0.10", tp.Server("web-a").IP)
	before, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	// Another control port, so that only the state path is shared.
	second := strings.Replace(tp.Config(), tp.controlListen(), "127.0.0.1:7071", 1)
	second = strings.Replace(second, filepath.Join(tp.dir, "state.json"), statePath, 1)
	cfg := tp.WriteConfig("second.toml", second)
	pid := g.proc.cmd.Process.Pid
	for i, args := range [][]string{{"serve", "--config", cfg}, {"serve", "--config", cfg, "--reset-state"}} {
		p := tp.startProc(fmt.Sprintf("vipmux-second-%d", i), tp.GatewayNS, vipmuxBin, args...)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("vipmux %s on a state path in use still runs after 10 s, want it refused", strings.Join(args, " "))
		}
		out := p.output()
		if code := p.exitCode(); code == 0 {
			t.Errorf("vipmux %s on a state path in use: exit 0, want non-zero\n%s", strings.Join(args, " "), out)
		}
		t.Logf("vipmux %s refused: %s", strings.Join(args[2:], " "), strings.TrimSpace(out))
		for _, want := range []string{statePath, fmt.Sprintf("pid %d", pid)} {
			if !strings.Contains(out, want) {
				t.Errorf("vipmux %s on a state path in use: message does not name %q:\n%s", strings.Join(args, " "), want, out)
			}
		}
	}
	if after, err := os.ReadFile(statePath); err != nil || string(after) != string(before) {
		t.Errorf("state file after the refused starts = %q, %v; want it unchanged %q", after, err, before)
	}
	if code, body := g.HealthCheck(); code != 200 {
		t.Errorf("first gateway after the refused starts: /healthz %d %s, want 200", code, body)
	}
	if got := tp.Get("http://198.18.0.10:8080/"); got != "web-a" {
		t.Errorf("first gateway after the refused starts: curl = %q, want web-a", got)
	}
}

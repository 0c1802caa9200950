//go:build linux

package e2e

import (
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

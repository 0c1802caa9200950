//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipmux/vipmux/registry"
)

// TestResetState (issue 5, hostile and careless input): a truncated state
// file makes serve refuse at once, naming the file and the way out, and
// leaves the file byte for byte as it was; --reset-state moves it aside
// (never deletes it) and starts with an empty table.
func TestResetState(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}})
	statePath := filepath.Join(tp.dir, "state.json")
	torn := []byte(`{"version":1,"bindings":[{"ip":"198.18.0.10","port":0,"members":[{"name":"web-a","back`)
	if err := os.WriteFile(statePath, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := tp.WriteConfig("vipmux.toml", tp.Config())

	start := time.Now()
	p := tp.startProc("vipmux-torn", tp.GatewayNS, vipmuxBin, "serve", "--config", cfg)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("serve with a truncated state file still runs after 10 s, want it to refuse")
	}
	elapsed := time.Since(start)
	out := p.output()
	if code := p.exitCode(); code == 0 {
		t.Errorf("serve with a truncated state file: exit 0, want non-zero\n%s", out)
	}
	for _, want := range []string{statePath, "--reset-state"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve with a truncated state file: message does not contain %q:\n%s", want, out)
		}
	}
	if got, err := os.ReadFile(statePath); err != nil || !bytes.Equal(got, torn) {
		t.Errorf("state file after the refusal = %q, %v; want it unchanged %q", got, err, torn)
	}
	t.Logf("serve refused a truncated state file in %v: %s", elapsed.Round(time.Millisecond), strings.TrimSpace(out))

	tp.StartConfig(cfg, "--reset-state")
	if st := tp.Status(); len(st.Bindings) != 0 {
		t.Errorf("status after --reset-state = %v, want an empty table", st.Summary())
	}
	moved, _ := filepath.Glob(statePath + ".corrupt-*")
	if len(moved) != 1 {
		t.Fatalf("after --reset-state: %d files %s.corrupt-*, want 1", len(moved), statePath)
	}
	if got, err := os.ReadFile(moved[0]); err != nil || !bytes.Equal(got, torn) {
		t.Errorf("moved-aside file %s = %q, %v; want the old bytes", moved[0], got, err)
	}
	if log := tp.gwLog(); !strings.Contains(log, moved[0]) {
		t.Errorf("gateway log does not say where the old file went (%s):\n%s", moved[0], log)
	}
	tp.Register("web-a", "198.18.0.10", tp.Server("web-a").IP)
	if got := tp.Get("http://198.18.0.10:8080/"); got != "web-a" {
		t.Errorf("after --reset-state and register: curl = %q, want web-a", got)
	}
}

// TestPersistKill9 (issue 5, persistence): a client registers 200 mode-1
// bindings as fast as the API answers while the gateway is killed with
// SIGKILL at a random moment; after a restart on the same state file,
// every registration that was answered 200 is there, and the file always
// decodes. Five rounds, each on a fresh state file.
func TestPersistKill9(t *testing.T) {
	t.Parallel()
	// No duplicate-address probes: they would make each registration wait
	// 200 ms, and this test is about the disk.
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Extra: "[arp]\ndad_probes = 0"})
	const rounds, n = 5, 200
	for round := range rounds {
		statePath := filepath.Join(tp.dir, "persist-"+string(rune('a'+round))+".json")
		cfg := tp.WriteConfig("persist.toml", strings.Replace(tp.Config(), filepath.Join(tp.dir, "state.json"), statePath, 1))
		g := tp.StartConfig(cfg)

		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		loop := exec.CommandContext(ctx, "ip", "netns", "exec", tp.GatewayNS, tcpclientBin, "register", "-n", fmt.Sprint(n), "-timeout", "60s", controlURL)
		loop.Env = cleanEnv(nil)
		var out bytes.Buffer
		loop.Stdout, loop.Stderr = &out, &out
		if err := loop.Start(); err != nil {
			cancel()
			t.Fatalf("start tcpclient register: %v", err)
		}
		delay := 20*time.Millisecond + rand.N(1200*time.Millisecond)
		time.Sleep(delay)
		g.proc.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-g.proc.done:
		case <-time.After(5 * time.Second):
			cancel()
			t.Fatalf("round %d: gateway still alive 5 s after SIGKILL", round)
		}
		loop.Wait()
		cancel()
		var acked []string
		for _, l := range strings.Split(out.String(), "\n") {
			if ip, ok := strings.CutPrefix(l, "ok "); ok {
				acked = append(acked, ip)
			}
		}

		// The snapshot and its journal, read as the restarted gateway
		// will: they must decode and hold every acknowledged change.
		if data, err := os.ReadFile(statePath); err == nil {
			if _, err := registry.DecodeTable(data); err != nil {
				t.Fatalf("round %d: state file after SIGKILL does not decode: %v\n%s", round, err, data)
			}
		} else if len(acked) > 0 {
			t.Fatalf("round %d: %d registrations acknowledged but no state file: %v", round, len(acked), err)
		}
		tb, err := (&registry.FileStore{Path: statePath}).Load()
		if err != nil {
			t.Fatalf("round %d: state after SIGKILL does not load: %v", round, err)
		}
		got := 0
		if tb != nil {
			got = tb.Len()
		}
		if got < len(acked) {
			t.Errorf("round %d: state has %d bindings, %d were acknowledged", round, got, len(acked))
		}

		g2 := tp.StartConfig(cfg)
		have := map[string]bool{}
		for _, b := range tp.Status().Bindings {
			have[b.IP] = true
		}
		var lost []string
		for _, ip := range acked {
			if !have[ip] {
				lost = append(lost, ip)
			}
		}
		if len(lost) > 0 {
			t.Errorf("round %d: %d acknowledged registrations missing after restart: %v", round, len(lost), lost)
		}
		t.Logf("round %d: killed after %v: %d acknowledged, %d in the restored table", round, delay.Round(time.Millisecond), len(acked), len(have))
		if code := g2.Stop(syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Fatalf("round %d: restarted gateway exited %d after SIGTERM, want 0", round, code)
		}
	}
}

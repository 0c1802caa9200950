package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestDemoLeavesNothingRunning runs scripts/demo.sh (make demo) and checks
// that no process it started outlives it: the demo's gateway and servers
// used to keep running after their namespaces were gone. Every process the
// demo starts inherits a marker in its environment; after the demo exits,
// no process may carry it.
func TestDemoLeavesNothingRunning(t *testing.T) {
	requireRoot(t)
	requireVipmux(t)
	mark := make([]byte, 8)
	if _, err := rand.Read(mark); err != nil {
		t.Fatal(err)
	}
	env := "VIPMUX_DEMO_TEST=" + hex.EncodeToString(mark)
	t.Cleanup(func() {
		// A leak must not outlive the test either.
		for _, pid := range marked(env) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	cmd := exec.Command("bash", "scripts/demo.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env, "BIN="+vipmuxBin, "NAMESRV="+namesrvBin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start demo: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo failed: %v\n%s", err, out.Bytes())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("demo did not end within 2 minutes\n%s", out.Bytes())
	}
	if left := marked(env); len(left) > 0 {
		t.Fatalf("processes started by the demo still run after it exited: pids %v\n%s", left, out.Bytes())
	}
}

// marked returns the pids of the processes whose environment holds kv.
func marked(kv string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil {
			continue
		}
		for _, e := range bytes.Split(b, []byte{0}) {
			if string(e) == kv {
				if pid, err := strconv.Atoi(filepath.Base(d)); err == nil && pid != os.Getpid() {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids
}

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
// used to keep running after their namespaces were gone.
func TestDemoLeavesNothingRunning(t *testing.T) {
	runDemo(t, "scripts/demo.sh")
}

// TestDemoClusterLeavesNothingRunning runs scripts/demo-cluster.sh (make
// demo-cluster): etcd, two gateways, a kill -9 of one and the takeover by
// the other. The script checks what it tells (the IP served by the other
// gateway, its gratuitous ARP in a capture, every binding still in the
// table and held by the survivor) and exits non-zero otherwise; nothing it
// started may outlive it, etcd included.
func TestDemoClusterLeavesNothingRunning(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil {
		if inCI() {
			t.Fatalf("etcd not found (Debian package etcd-server; make deps installs it): %v", err)
		}
		t.Skip("etcd not found: apt-get install etcd-server")
	}
	out := runDemo(t, "scripts/demo-cluster.sh")
	for _, want := range []string{"sent gratuitous ARP", "The table is intact"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("demo-cluster's output lacks %q:\n%s", want, out)
		}
	}
}

// runDemo runs script (as root, with the e2e binaries), fails the test if
// it fails or if any process it started still runs after it exited, and
// returns its output. Every process the demo starts inherits a marker in
// its environment; after the demo exits, no process may carry it.
func runDemo(t *testing.T, script string) []byte {
	t.Helper()
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
	cmd := exec.Command("bash", script)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env, "BIN="+vipmuxBin, "NAMESRV="+namesrvBin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", script, err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s failed: %v\n%s", script, err, out.Bytes())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("%s did not end within 2 minutes\n%s", script, out.Bytes())
	}
	if left := marked(env); len(left) > 0 {
		t.Fatalf("processes started by %s still run after it exited: pids %v\n%s", script, left, out.Bytes())
	}
	return out.Bytes()
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

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkout clones the repository's HEAD into a temporary directory (a
// plain clone: the Go toolchain stamps VCS information from it) and
// returns the clone's directory and HEAD's commit. Without git or a
// checkout it skips, except in CI.
func checkout(t *testing.T) (dir, head string) {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		if inCI() {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	if _, err := exec.LookPath("git"); err != nil {
		skip("needs git: %v", err)
	}
	out, errOut, code := run(10*time.Second, nil, "git", "-C", "..", "rev-parse", "HEAD")
	if code != 0 {
		skip("needs a git checkout: git rev-parse HEAD: %s", errOut)
	}
	head = strings.TrimSpace(out)
	dir = filepath.Join(t.TempDir(), "vipmux")
	if _, errOut, code := run(60*time.Second, nil, "git", "clone", "--quiet", "--shared", "..", dir); code != 0 {
		t.Fatalf("git clone: %s", errOut)
	}
	return dir, head
}

// TestVersionPlainBuild builds vipmux with a plain go build (no linker
// flags) and checks that vipmux version reports what the Go toolchain
// recorded (issue 15, point 14): the commit, and a version that is not
// "dev".
func TestVersionPlainBuild(t *testing.T) {
	dir, head := checkout(t)
	bin := filepath.Join(t.TempDir(), "vipmux")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=true", "-o", bin, "./cmd/vipmux")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/vipmux: %v\n%s", err, out)
	}
	out, errOut, code := run(10*time.Second, nil, bin, "version")
	if code != 0 {
		t.Fatalf("vipmux version: exit %d\n%s", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 2 || lines[1] != "commit "+head[:12] {
		t.Errorf("vipmux version of a plain go build =\n%s\nwant commit %s on the second line", out, head[:12])
	}
	if strings.HasPrefix(lines[0], "vipmux dev") || !strings.Contains(lines[0], head[:12]) {
		t.Errorf("vipmux version of a plain go build: first line %q, want the module version the toolchain stamped (with %s)", lines[0], head[:12])
	}
	if v, _, _ := run(10*time.Second, nil, bin, "--version"); !strings.Contains(v, head[:12]) {
		t.Errorf("vipmux --version = %q, want the stamped version", v)
	}
}

// TestInstallBuildsNoTestServer runs make install into a DESTDIR from a
// clean clone (issue 15, point 14): it builds and installs vipmux, its
// unit, man page and completions, and does not build the test server
// namesrv, which only the demo and the tests use.
func TestInstallBuildsNoTestServer(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		if inCI() {
			t.Fatalf("needs make: %v", err)
		}
		t.Skipf("needs make: %v", err)
	}
	dir, _ := checkout(t)
	dest := filepath.Join(t.TempDir(), "root")
	cmd := exec.Command("make", "install", "DESTDIR="+dest)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install DESTDIR=%s: %v\n%s", dest, err, out)
	}
	if strings.Contains(string(out), "namesrv") {
		t.Errorf("make install built the test server:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "bin", "namesrv")); err == nil {
		t.Errorf("make install left bin/namesrv in the checkout")
	}
	for _, f := range []string{
		"usr/local/bin/vipmux",
		"usr/local/lib/systemd/system/vipmux.service",
		"usr/local/share/man/man8/vipmux.8",
		"usr/local/share/bash-completion/completions/vipmux",
		"usr/local/share/fish/vendor_completions.d/vipmux.fish",
		"etc/vipmux/vipmux.toml",
	} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("make install did not install %s: %v", f, err)
		}
	}
	if v, errOut, code := run(10*time.Second, nil, filepath.Join(dest, "usr/local/bin/vipmux"), "version"); code != 0 || !strings.HasPrefix(v, "vipmux ") {
		t.Errorf("installed vipmux version: exit %d %q %s", code, v, errOut)
	}
}

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

// TestRegisterFile (issue 14, lever 7): `vipmux register --file` registers
// every line of a file as one change through POST /v1/register/batch. The
// addresses answer ARP and reach their servers, survive a restart (the
// batch was durable when the command returned), and a file with one bad
// line is refused with that line's number and registers nothing.
func TestRegisterFile(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}})
	g := tp.Start()

	const n = 40
	var b strings.Builder
	b.WriteString("# 40 mode-1 servers, alternating between the two server namespaces\n\n")
	for i := range n {
		srv := []string{"web-a", "web-b"}[i%2]
		fmt.Fprintf(&b, "--name s%d --ip 198.18.0.%d --backend %s   # %s\n", i, 20+i, tp.Server(srv).IP, srv)
	}
	file := filepath.Join(tp.dir, "servers.txt")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := tp.MustCLI("register", "--file", file)
	if want := fmt.Sprintf("registered %d from %s in one change", n, file); !strings.Contains(out, want) {
		t.Errorf("vipmux register --file: output does not say %q:\n%s", want, out)
	}
	for _, c := range []struct{ ip, want string }{{"198.18.0.20", "web-a"}, {"198.18.0.21", "web-b"}, {"198.18.0.59", "web-b"}} {
		if got := tp.Get("http://" + c.ip + ":8080/"); got != c.want {
			t.Errorf("curl http://%s:8080/ = %q, want %q", c.ip, got, c.want)
		}
		tp.requireARPAnswer(c.ip)
	}
	if got := len(tp.Status().Bindings); got != n {
		t.Errorf("status after register --file: %d bindings, want %d", got, n)
	}

	// One bad line: the third registers an address that s0 holds. Nothing
	// of the file is applied, not even its good first line.
	bad := filepath.Join(tp.dir, "bad.txt")
	badText := "--name t1 --ip 198.18.0.90 --backend 198.19.0.2\n" +
		"# a comment line\n" +
		"--name t2 --ip 198.18.0.20 --backend 198.19.0.2\n"
	if err := os.WriteFile(bad, []byte(badText), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := tp.CLI(nil, "register", "--file", bad)
	if code == 0 || !strings.Contains(stderr, bad+":3:") || !strings.Contains(stderr, "409") || !strings.Contains(stderr, "ip:") {
		t.Errorf("vipmux register --file with a conflict on line 3: exit %d\nstdout: %s\nstderr: %s\nwant non-zero, naming %s:3, 409 and the field ip", code, stdout, stderr, bad)
	}
	for _, bd := range tp.Status().Bindings {
		if bd.IP == "198.18.0.90" {
			t.Errorf("198.18.0.90 (line 1 of a refused file) is registered: %+v", bd)
		}
	}
	// A line that the CLI cannot parse never reaches the gateway.
	if err := os.WriteFile(bad, []byte("--name t3 --ip 198.18.0.91 --backend 198.19.0.2 --weight 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := tp.CLI(nil, "register", "--file", bad); code == 0 || !strings.Contains(stderr, bad+":1: unknown flag --weight") {
		t.Errorf("vipmux register --file with --weight: exit %d, stderr %s; want non-zero naming %s:1 and --weight", code, stderr, bad)
	}

	// Durable when the command returned: a restart restores all of them.
	if code := g.Stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("gateway exited %d after SIGTERM, want 0", code)
	}
	tp.Start()
	if got := len(tp.Status().Bindings); got != n {
		t.Errorf("status after a restart: %d bindings, want the %d of the file", got, n)
	}
	if got := tp.Get("http://198.18.0.58:8080/"); got != "web-a" {
		t.Errorf("after a restart, curl http://198.18.0.58:8080/ = %q, want web-a", got)
	}
}

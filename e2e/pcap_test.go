package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serve --pcap FILE (issue 7): the front NIC's frames in a file that
// tcpdump reads.

// requireTool is requireRoot for one more tool: a skip outside CI, a
// failure with CI=true.
func requireTool(t *testing.T, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err == nil {
		return
	}
	msg := tool + " is missing (apt-get install -y " + pkg + ", or make deps)"
	if inCI() {
		t.Fatal(msg + "; CI=true, so this is a failure, not a skip")
	}
	t.Skip(msg)
}

// tcpdumpRead runs tcpdump -r file -nn -e and returns its output.
func tcpdumpRead(t *testing.T, file string) string {
	t.Helper()
	out, errOut, code := run(30*time.Second, nil, "tcpdump", "-r", file, "-nn", "-e")
	if code != 0 {
		t.Fatalf("tcpdump -r %s: exit %d: %s", file, code, errOut)
	}
	return out
}

// TestPcap runs a request through a gateway started with --pcap, reads the
// file with tcpdump while the gateway runs and again after it stopped, and
// finds the client's SYN to the front IP and the gateway's ARP reply.
func TestPcap(t *testing.T) {
	t.Parallel()
	requireVipmux(t)
	requireTool(t, "tcpdump", "tcpdump")
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}})
	file := filepath.Join(tp.dir, "front.pcap")
	// An existing file is replaced, and made private.
	if err := os.WriteFile(file, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := tp.StartConfig(tp.WriteConfig("vipmux.toml", tp.Config()), "--pcap", file)
	const ip = "198.18.0.10"
	tp.Register("web-a", ip, tp.Server("web-a").IP)
	if got := tp.Get("http://" + ip + ":8080/"); got != "web-a" {
		t.Fatalf("GET http://%s:8080/ = %q, want web-a", ip, got)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("pcap file mode %v, want 0600", mode)
	}

	syn := "198.18.0.1."                      // then the client's port
	synTo := " > " + ip + ".8080: Flags [S]," // the client's SYN to the front IP
	arpReply := "Reply " + ip + " is-at " + tp.FrontMAC
	check := func(when, out string) {
		t.Helper()
		var sawSYN, sawARP bool
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "IPv4") && strings.Contains(l, syn) && strings.Contains(l, synTo) {
				sawSYN = true
			}
			if strings.Contains(l, "ARP") && strings.Contains(l, arpReply) {
				sawARP = true
			}
		}
		if !sawSYN {
			t.Errorf("%s: tcpdump shows no SYN from 198.18.0.1 to %s:8080:\n%s", when, ip, out)
		}
		if !sawARP {
			t.Errorf("%s: tcpdump shows no ARP reply %q:\n%s", when, arpReply, out)
		}
	}
	// Readable while the gateway runs: frames are flushed within 200 ms.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := tcpdumpRead(t, file)
		if strings.Contains(out, synTo) || time.Now().After(deadline) {
			check("while running", out)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	if code := g.Stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("vipmux serve exited %d after SIGTERM, want 0", code)
	}
	out := tcpdumpRead(t, file)
	check("after a clean stop", out)
	// The whole exchange is there: the client's FIN to the front IP too.
	if !strings.Contains(out, " > "+ip+".8080: Flags [F") {
		t.Errorf("after a clean stop: no FIN from the client to %s:8080:\n%s", ip, out)
	}
	t.Logf("tcpdump read %d frames", strings.Count(strings.TrimSpace(out), "\n")+1)
}

// TestPcapBadFile: a capture file that cannot be created stops serve at
// once with a message naming --pcap, before it touches the NIC.
func TestPcapBadFile(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket"})
	cfg := tp.WriteConfig("vipmux.toml", tp.Config())
	bad := filepath.Join(tp.dir, "no-such-dir", "front.pcap")
	_, errOut, code := run(20*time.Second, nil, "ip", "netns", "exec", tp.GatewayNS, vipmuxBin, "serve", "--config", cfg, "--pcap", bad)
	if code == 0 || !strings.Contains(errOut, "--pcap: open "+bad+": no such file or directory") {
		t.Errorf("serve --pcap %s: exit %d, stderr %q; want non-zero naming --pcap and the file", bad, code, errOut)
	}
	if strings.Contains(errOut, "gateway serving") {
		t.Errorf("serve --pcap %s started serving: %s", bad, errOut)
	}
}

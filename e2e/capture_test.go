//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCaptureLive (issue 15 point 4): vipmux capture streams pcap from
// the running gateway through the API (behind the token) while a
// connection goes through it; tcpdump reads the file and finds the SYN.
// Profiling is reachable the same way.
func TestCaptureLive(t *testing.T) {
	t.Parallel()
	requireTool(t, "tcpdump", "tcpdump")
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Token: "capture-token"})
	g := tp.Start()
	const ip = "198.18.0.10"
	tokenEnv := []string{"VIPMUX_TOKEN_FILE=" + tp.TokenFile()}
	if _, errOut, code := tp.CLI(tokenEnv, "register", "--name", "web-a", "--ip", ip, "--backend", tp.Server("web-a").IP); code != 0 {
		t.Fatalf("vipmux register: exit %d: %s", code, errOut)
	}

	// Without the token: refused.
	if _, errOut, code := tp.CLI(nil, "capture", "--duration", "1s", "-o", filepath.Join(tp.dir, "no.pcap")); code == 0 || !strings.Contains(errOut, "401") {
		t.Errorf("vipmux capture without the token: exit %d, stderr %q; want non-zero, 401", code, errOut)
	}
	// A bad filter: refused, naming it.
	if _, errOut, code := tp.CLI(tokenEnv, "capture", "--filter", "tcp or udp", "-o", filepath.Join(tp.dir, "bad.pcap")); code == 0 || !strings.Contains(errOut, "filter") {
		t.Errorf("vipmux capture --filter 'tcp or udp': exit %d, stderr %q; want non-zero naming filter", code, errOut)
	}

	file := filepath.Join(tp.dir, "front.pcap")
	type result struct {
		errOut string
		code   int
	}
	done := make(chan result, 1)
	go func() {
		_, errOut, code := tp.CLI(tokenEnv, "capture", "--duration", "4s", "--filter", "host "+ip, "-o", file)
		done <- result{errOut, code}
	}()
	g.waitLog(t, "capture started", 1)
	if got := tp.Get("http://" + ip + ":8080/"); got != "web-a" {
		t.Fatalf("GET http://%s:8080/ = %q, want web-a", ip, got)
	}
	r := <-done
	if r.code != 0 {
		t.Fatalf("vipmux capture: exit %d: %s", r.code, r.errOut)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("capture file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	out := tcpdumpRead(t, file)
	var sawSYN bool
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, clientIP+".") && strings.Contains(l, " > "+ip+".8080: Flags [S],") {
			sawSYN = true
		}
		if !strings.Contains(l, ip) && strings.TrimSpace(l) != "" {
			t.Errorf("capture --filter 'host %s' recorded %q", ip, l)
		}
	}
	if !sawSYN {
		t.Errorf("tcpdump -r of the live capture shows no SYN from %s to %s:8080:\n%s", clientIP, ip, out)
	}
	g.waitLog(t, "capture ended", 1)

	// Profiling, behind the token.
	url := tp.ControlURL() + "/v1/debug/pprof/goroutine?debug=1"
	if body, _, _ := tp.GatewayCurl("-sS", "--max-time", "5", "-H", "Authorization: Bearer capture-token", url); !strings.Contains(body, "goroutine profile:") {
		t.Errorf("GET %s with the token: %.200q, want a goroutine profile", url, body)
	}
	if code, _, _ := tp.GatewayCurl("-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", url); code != "401" {
		t.Errorf("GET %s without the token: HTTP %s, want 401", url, code)
	}
}

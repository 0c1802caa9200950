//go:build linux

package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestServeFrontLinkGone (issue 12 point 11, issue 15 point 0): serve does
// not live on without its front link. When the front interface is deleted
// under it (ip link del, or its namespace removed), serve exits non-zero
// within a few seconds with an error naming the interface, so that
// systemd restarts it and says why.
func TestServeFrontLinkGone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		driver string
		// noOffload sets [nic] offload = false.
		noOffload bool
		// iface is what the error must name; del is the link the test
		// deletes in the gateway namespace.
		iface, del string
	}{
		{name: "afpacket offload", driver: "afpacket", iface: "f0", del: "f0"},
		{name: "afpacket no offload", driver: "afpacket", noOffload: true, iface: "f0", del: "f0"},
		{name: "tap", driver: "tap", iface: tapName, del: tapName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tp := NewTopology(t, Options{Driver: tc.driver, Servers: []string{"web-a"}})
			cfg := tp.Config()
			if tc.noOffload {
				cfg = strings.Replace(cfg, "[nic]\n", "[nic]\noffload = false\n", 1)
			}
			g := tp.StartConfig(tp.WriteConfig("frontlink.toml", cfg))
			if code, body := g.HealthCheck(); code != 200 {
				t.Fatalf("/healthz before the link is deleted = %d %s, want 200", code, body)
			}
			must(t, "ip", "-n", tp.GatewayNS, "link", "del", tc.del)
			select {
			case <-g.proc.done:
			case <-time.After(10 * time.Second):
				code, body := g.HealthCheck()
				t.Fatalf("serve still runs 10 s after its front interface %s was deleted (/healthz %d %s), want it to exit", tc.del, code, body)
			}
			out := g.Log()
			code := g.proc.exitCode()
			if code == 0 {
				t.Errorf("serve after its front interface was deleted: exit 0, want non-zero\n%s", out)
			}
			t.Logf("serve exited %d after %s was deleted; its last lines:\n%s", code, tc.del, lastLines(out, 3))
			if !strings.Contains(out, "front") || !strings.Contains(out, tc.iface) {
				t.Errorf("serve's message does not say that front interface %s is gone:\n%s", tc.iface, out)
			}
		})
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

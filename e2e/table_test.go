package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestSwitchToDownMember (issue 12 point 7): `vipmux switch --to B` while
// B's health check fails is refused (409, naming its health) and leaves
// the port served by its active; `--force` switches anyway; B's next
// failed check then fails the port back over to the healthy member: the
// port is never left without a server while a healthy member exists.
func TestSwitchToDownMember(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
	tp.Start()
	tp.RegisterPort("web-a", 8080, "active")
	tp.RegisterPort("web-b", 8080, "standby")
	url := "http://" + sharedIP + ":8080/"
	tp.requireAll(url, 10, "web-a", "web-a active, web-b standby")

	tp.killServer(tp.Server("web-b"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, down, _ := tp.healthStatus().member(sharedIP, 8080, "web-b"); down {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web-b not marked down 10s after its server was killed\ngateway log:\n%s", tp.gwLog())
		}
		time.Sleep(50 * time.Millisecond)
	}

	out, errOut, code := tp.CLI(nil, "switch", "--port", "8080", "--to", "web-b")
	if code == 0 {
		t.Errorf("vipmux switch --to web-b (down): exit 0, want non-zero\nstdout: %s", out)
	}
	for _, want := range []string{"409", "web-b is down", "health check failed", "--force"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("vipmux switch --to web-b (down): stderr %q, want it to contain %q", errOut, want)
		}
	}
	tp.requireStates(sharedIP, 8080, map[string]string{"web-a": "active", "web-b": "standby"}, "after the refused switch")
	tp.requireAll(url, 10, "web-a", "after the refused switch")

	out = tp.MustCLI("switch", "--port", "8080", "--to", "web-b", "--force")
	if !strings.Contains(out, "web-b") || !strings.Contains(out, "active") {
		t.Errorf("vipmux switch --force: stdout %q, want web-b active", out)
	}
	// web-b's next failed check fails the port back over to web-a.
	deadline = time.Now().Add(10 * time.Second)
	for {
		state, _, _ := tp.healthStatus().member(sharedIP, 8080, "web-a")
		if state == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web-a not active again 10s after the forced switch to the dead web-b\ngateway log:\n%s", tp.gwLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
	tp.requireAll(url, 10, "web-a", "after web-b's next failed check")
}

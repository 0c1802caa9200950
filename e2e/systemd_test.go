//go:build linux

package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// systemd's view of serve (issue 15 point 2): the notifications that
// Type=notify relies on, read from a NOTIFY_SOCKET of the test's own.

// notifySocket is a stand-in for systemd's notification socket: a
// unixgram socket in the test's directory (a path, not an abstract
// socket: those belong to a network namespace, and serve runs in the
// gateway's). Its messages arrive on msgs, each as its lines.
type notifySocket struct {
	path string
	msgs chan []string
}

func newNotifySocket(t *testing.T, dir string) *notifySocket {
	t.Helper()
	ns := &notifySocket{path: filepath.Join(dir, "notify.sock"), msgs: make(chan []string, 64)}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on %s: %v", ns.path, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return // closed by the cleanup
			}
			ns.msgs <- strings.Split(strings.TrimSuffix(string(buf[:n]), "\n"), "\n")
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return ns
}

// next returns the next message, failing the test after 10 s without one.
func (ns *notifySocket) next(t *testing.T, what string) []string {
	t.Helper()
	select {
	case m := <-ns.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no notification within 10 s, want %s", what)
		return nil
	}
}

// none fails the test if a message is waiting.
func (ns *notifySocket) none(t *testing.T, when string) {
	t.Helper()
	select {
	case m := <-ns.msgs:
		t.Errorf("%s: unexpected notification %q", when, m)
	default:
	}
}

// expect reads the next message and checks that its first line is first
// and that it has every line with one of the prefixes.
func (ns *notifySocket) expect(t *testing.T, first string, prefixes ...string) []string {
	t.Helper()
	m := ns.next(t, first)
	if m[0] != first {
		t.Fatalf("notification %q, want one starting with %s", m, first)
	}
	for _, p := range prefixes {
		found := false
		for _, l := range m[1:] {
			found = found || strings.HasPrefix(l, p)
		}
		if !found {
			t.Errorf("notification %q has no %s line", m, p)
		}
	}
	return m
}

// TestServeNotify checks the messages, and their order, that serve sends
// to $NOTIFY_SOCKET: READY=1 once it serves; RELOADING=1 with
// MONOTONIC_USEC= and READY=1 around a good reload (SIGHUP) and around a
// refused one (vipmux reload, which exits 1, so that ExecReload fails
// systemctl reload); STOPPING=1 on SIGTERM, and nothing after.
func TestServeNotify(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}})
	ns := newNotifySocket(t, tp.dir)
	tp.opts.Wrap = []string{"env", "NOTIFY_SOCKET=" + ns.path}
	g := tp.Start() // /healthz answers: READY=1 must be there already

	ready := ns.expect(t, "READY=1", "STATUS=")
	ns.none(t, "after READY=1")
	// The gateway is serving when it says so: the API answers.
	if code, body := g.HealthCheck(); code != 200 {
		t.Errorf("after %q: /healthz = %d %s, want 200", ready, code, body)
	}

	// A good reload.
	g.hup()
	ns.expect(t, "RELOADING=1", "MONOTONIC_USEC=")
	if m := ns.expect(t, "READY=1", "STATUS="); !strings.Contains(strings.Join(m, " "), "config reloaded") {
		t.Errorf("READY=1 after a good reload: %q, want a STATUS= saying config reloaded", m)
	}

	// A refused reload: vipmux reload (ExecReload=) fails.
	tp.rewriteConfig(g, "[health]\nrise = 0\n")
	if _, errOut, code := tp.CLI(nil, "reload"); code != 1 || !strings.Contains(errOut, "health.rise") {
		t.Errorf("vipmux reload of a bad file: exit %d, stderr %q; want 1 naming health.rise", code, errOut)
	}
	ns.expect(t, "RELOADING=1", "MONOTONIC_USEC=")
	if m := ns.expect(t, "READY=1", "STATUS="); !strings.Contains(strings.Join(m, " "), "reload refused") {
		t.Errorf("READY=1 after a refused reload: %q, want a STATUS= saying reload refused", m)
	}
	ns.none(t, "after the refused reload")

	if code := g.Stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("vipmux serve exited %d after SIGTERM, want 0:\n%s", code, g.Log())
	}
	ns.expect(t, "STOPPING=1")
	time.Sleep(100 * time.Millisecond) // a datagram sent at exit has arrived by now
	ns.none(t, "after STOPPING=1")
}

// TestServeNotifyNoReadyOnFailure: a gateway that cannot open its NIC
// exits non-zero without ever sending READY=1 (Type=exec reported success
// there; Type=notify fails systemctl start).
func TestServeNotifyNoReadyOnFailure(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket"})
	ns := newNotifySocket(t, tp.dir)
	cfg := strings.Replace(tp.Config(), `interface = "f0"`, `interface = "nosuch0"`, 1)
	p := tp.startProc("vipmux-nonic", tp.GatewayNS, "env", "NOTIFY_SOCKET="+ns.path, vipmuxBin, "serve", "--config", tp.WriteConfig("nonic.toml", cfg))
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("vipmux serve with a missing interface still runs after 10 s:\n%s", p.output())
	}
	if code := p.exitCode(); code == 0 {
		t.Errorf("vipmux serve with a missing interface exited 0, want non-zero:\n%s", p.output())
	}
	time.Sleep(100 * time.Millisecond)
	ns.none(t, "serve that failed to open its NIC")
}

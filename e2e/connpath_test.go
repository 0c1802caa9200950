//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The connection path under hostile clients (issue 12, points 1 and 2):
// handshakes that never complete, connections that never send, and more
// connections than the gateway should hold.

// floodIP is the second client address of TestHandshakeFlood: its SYNs
// come from a raw socket, and the client's kernel never sees the gateway's
// SYN-ACKs to it (nft drops them), so no RST ever ends its handshakes.
const floodIP = "198.18.0.2"

// handshakeFirstAbove is [dispatch] handshake_first_above's default: the
// bound on backend connections open for clients whose handshake has not
// completed.
const handshakeFirstAbove = 256

// dropSYNACKs makes the client namespace drop every SYN-ACK sent to ip:
// a host that never answers the handshakes it starts.
func (tp *Topology) dropSYNACKs(ip string) {
	tp.t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		if inCI() {
			tp.t.Fatalf("nft is missing (apt-get install nftables; make deps)")
		}
		tp.t.Skip("nft is missing (apt-get install nftables)")
	}
	must(tp.t, "ip", "netns", "exec", tp.ClientNS, "nft", "add", "table", "ip", "vmxflood")
	must(tp.t, "ip", "netns", "exec", tp.ClientNS, "nft", "add chain ip vmxflood in { type filter hook input priority 0 ; }")
	must(tp.t, "ip", "netns", "exec", tp.ClientNS, "nft", "add rule ip vmxflood in ip daddr "+ip+" tcp flags & (syn|ack) == syn|ack drop")
}

// backendConns counts the established TCP connections of server s on port.
func (tp *Topology) backendConns(s *Server, port string) int {
	out, _, code := run(5*time.Second, nil, "ip", "netns", "exec", s.NS, "ss", "-Htn", "state", "established", "( sport = :"+port+" )")
	if code != 0 {
		return -1
	}
	return strings.Count(out, "\n")
}

// synflood sends n raw SYNs from src to addr from the client namespace and
// returns how many went out.
func (tp *Topology) synflood(src, addr string, n int) int {
	var flood struct {
		Sent int `json:"sent"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", tp.ClientNS, tcpclientBin, "synflood", "-src", src, "-n", itoa(n), addr).Output()
	json.Unmarshal(out, &flood)
	return flood.Sent
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestHandshakeFlood (issue 12, point 1): 9,000 handshakes from a client
// whose kernel drops the SYN-ACKs neither starve legitimate clients of
// another address, nor open a backend connection each, nor hold up
// SIGTERM.
func TestHandshakeFlood(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}})
	must(t, "ip", "-n", tp.ClientNS, "addr", "add", floodIP+"/24", "dev", "c0")
	tp.dropSYNACKs(floodIP)
	g := tp.Start()
	a := tp.Server("web-a")
	tp.Register("web-a", "198.18.0.10", a.IP)
	if got := tp.Get("http://198.18.0.10:8080/"); got != "web-a" {
		t.Fatalf("curl 198.18.0.10:8080 = %q, want web-a", got)
	}

	// The backend's established connections, sampled through the test.
	var (
		mu      sync.Mutex
		peak    int
		stop    = make(chan struct{})
		sampled sync.WaitGroup
	)
	sampled.Go(func() {
		for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); {
			if n := tp.backendConns(a, "8080"); n >= 0 {
				mu.Lock()
				peak = max(peak, n)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})

	var sent int
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		sent = tp.synflood(floodIP, "198.18.0.10:8080", 9000)
	}()
	// The legitimate requests start once the flood is under way, and run
	// while its handshakes are in flight: each must succeed within 2 s
	// (tcpclient's -timeout is per request).
	time.Sleep(300 * time.Millisecond)
	out, errOut, code := tp.Client(2*time.Minute, "get", "-n", "20", "-timeout", "2s", "http://198.18.0.10:8080/")
	<-flooded
	if want := strings.Repeat("web-a\n", 20); code != 0 || out != want {
		t.Errorf("20 requests from %s during a flood of unanswered handshakes from %s: exit %d, %d of 20 answered web-a within 2 s each\n%s%s",
			clientIP, floodIP, code, strings.Count(out, "web-a\n"), out, errOut)
	}
	if sent < 9000 {
		t.Errorf("synflood sent %d SYNs, want 9000", sent)
	}
	time.Sleep(time.Second) // one more sample while the flood's handshakes wait
	close(stop)
	sampled.Wait()
	t.Logf("flood: %d SYNs; 20 requests: %s; peak backend connections %d", sent, strings.TrimSpace(errOut), peak)
	// The flood's handshakes never complete: the backend may see at most
	// handshake_first_above connections for them (dialled before the
	// handshake, while few were in flight), plus the 20 requests and the
	// first curl.
	if limit := handshakeFirstAbove + 21; peak > limit {
		t.Errorf("the backend had %d connections open at once during the flood, want at most %d (handshake_first_above + the 21 legitimate ones)", peak, limit)
	}

	// SIGTERM while a flood's handshakes are in flight: out within 5 s.
	if sent := tp.synflood(floodIP, "198.18.0.10:8080", 9000); sent < 9000 {
		t.Errorf("second synflood sent %d SYNs, want 9000", sent)
	}
	if code := g.Stop(syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Errorf("vipmux serve exited %d after SIGTERM during the flood, want 0", code)
	}
}

// TestIdleTimeout (issue 12, point 2): with [dispatch] idle_timeout = 2s, a
// connection on which nothing is sent either way is closed on both sides,
// and one that keeps sending is not.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"},
		Extra: "[dispatch]\nidle_timeout = \"2s\""})
	tp.Start()
	a := tp.Server("web-a")
	tp.Register("web-a", "198.18.0.10", a.IP)

	// A busy connection to the raw port (namesrv reads until half-close):
	// a write every 500 ms.
	s := tp.startStream("198.18.0.10:7000", 3, "-interval", "500ms", "-timeout", "60s")
	if l := s.next(t, 10*time.Second); !strings.Contains(l, "connected") {
		t.Fatalf("tcpclient stream: first line %q, want connected", l)
	}

	// An idle one: the gateway must close it; the client sees it end.
	var r DialResult
	tp.ClientJSON(40*time.Second, &r, "idle", "-timeout", "30s", "198.18.0.10:7000")
	if !r.OK {
		t.Fatalf("an idle connection through a gateway with idle_timeout 2s: %s after %d ms, want it closed by the gateway", r.Err, r.MS)
	}
	t.Logf("idle connection closed after %d ms (%s)", r.MS, r.Err)
	// The backend's side is closed too: only the busy connection is left.
	var n int
	for i := 0; i < 50; i++ {
		if n = tp.backendConns(a, "7000"); n == 1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n != 1 {
		t.Errorf("the backend has %d established connections on :7000 after the idle one was closed, want 1 (the busy one)", n)
	}
	// The busy connection outlived several idle timeouts.
	s.stdin.Write([]byte("mark\n"))
	if l := s.next(t, 5*time.Second); !strings.Contains(l, `"mark"`) {
		t.Errorf("busy stream after %d ms: %q, want a mark (still sending)", r.MS, l)
	}
	s.stdin.Close()
	if l := s.next(t, 10*time.Second); strings.Contains(l, `"err"`) && !strings.Contains(l, `"err":""`) {
		t.Errorf("busy stream's result: %s, want no error", l)
	}
}

// TestMaxConnections (issue 12, point 2): with [dispatch] max_connections
// = 2, a third connection is refused (RST) while two are open, counted in
// /metrics, and accepted again once one closes.
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"},
		Extra: "[dispatch]\nmax_connections = 2"})
	tp.Start()
	tp.Register("web-a", "198.18.0.10", tp.Server("web-a").IP)

	var streams []*streamProc
	for i := range 2 {
		s := tp.startStream("198.18.0.10:7000", i, "-interval", "200ms", "-timeout", "60s")
		if l := s.next(t, 10*time.Second); !strings.Contains(l, "connected") {
			t.Fatalf("tcpclient stream %d: first line %q, want connected", i, l)
		}
		streams = append(streams, s)
	}
	time.Sleep(200 * time.Millisecond) // both tracked
	if r := tp.Dial("198.18.0.10:7000", 5*time.Second); r.OK || !strings.Contains(r.Err, "refused") {
		t.Errorf("a third connection with max_connections = 2: ok=%v err=%q, want connection refused (RST)", r.OK, r.Err)
	}
	m := tp.Metrics("")
	refused := series("vipmux_connections_refused_total", "ip", "198.18.0.10", "member", "web-a", "port", "*", "reason", "max_connections")
	if m[refused] < 1 {
		t.Errorf("/metrics %s = %v, want at least 1", refused, m[refused])
	}

	streams[0].stdin.Close()
	streams[0].next(t, 10*time.Second) // its result: the connection is over
	var r DialResult
	for i := 0; i < 20; i++ {
		if r = tp.Dial("198.18.0.10:7000", 5*time.Second); r.OK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !r.OK {
		t.Errorf("a new connection after one of the two closed: %q, want accepted", r.Err)
	}
}

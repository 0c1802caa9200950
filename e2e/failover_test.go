//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Health checks and automatic failover (issue 5).

// healthStatus is the part of `vipmux status --json` that failover changes.
type healthStatus struct {
	Bindings []struct {
		IP      string `json:"ip"`
		Port    int    `json:"port"`
		Members []struct {
			Name   string `json:"name"`
			State  string `json:"state"`
			Down   bool   `json:"down"`
			Reason string `json:"reason"`
		} `json:"members"`
	} `json:"bindings"`
	Events []struct {
		Time    time.Time `json:"time"`
		Binding string    `json:"binding"`
		Member  string    `json:"member"`
		What    string    `json:"what"`
		Why     string    `json:"why"`
	} `json:"events"`
}

func (tp *Topology) healthStatus() healthStatus {
	tp.t.Helper()
	out := tp.MustCLI("status", "--json")
	var st healthStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		tp.t.Fatalf("vipmux status --json: %v\n%s", err, out)
	}
	return st
}

// member returns (state, down, reason) of member name on (ip, port).
func (st healthStatus) member(ip string, port int, name string) (state string, down bool, reason string) {
	for _, b := range st.Bindings {
		if b.IP != ip || b.Port != port {
			continue
		}
		for _, m := range b.Members {
			if m.Name == name {
				return m.State, m.Down, m.Reason
			}
		}
	}
	return "", false, ""
}

// killServer sends SIGKILL to every process in server s's namespace (its
// namesrv) and waits until none is left.
func (tp *Topology) killServer(s *Server) {
	tp.t.Helper()
	out := must(tp.t, "ip", "netns", "pids", s.NS)
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			tp.t.Fatalf("ip netns pids %s: %q is not a pid", s.NS, f)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		tp.t.Fatalf("no process runs in %s's namespace %s", s.Name, s.NS)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			tp.t.Fatalf("kill -KILL %d (%s): %v", pid, s.Name, err)
		}
	}
}

// pollResult is what pollUntil saw.
type pollResult struct {
	at       time.Time // when the first answer from want arrived
	ok       bool
	attempts int
	answers  map[string]int // by server name; "ERR" for failures
	lastErr  error
	slowest  time.Duration // the longest attempt, and how it ended
	slowErr  error
}

// pollUntil sends one HTTP/1.0 request on a new connection to addr from
// the client namespace every interval, until one is answered by want or
// limit has passed. The dials run on an OS thread that has entered the
// client namespace (and is discarded afterwards), so that the time of the
// first answer is measured without a process start per attempt.
func (tp *Topology) pollUntil(addr, want string, interval, limit time.Duration) pollResult {
	tp.t.Helper()
	ns, err := netns.GetFromName(tp.ClientNS)
	if err != nil {
		tp.t.Fatalf("open client namespace %s: %v", tp.ClientNS, err)
	}
	defer ns.Close()
	done := make(chan pollResult, 1)
	go func() {
		// Never unlocked: the goroutine's exit ends the thread, which
		// must not go back to the pool inside the client namespace.
		runtime.LockOSThread()
		res := pollResult{answers: map[string]int{}}
		if err := netns.Set(ns); err != nil {
			res.lastErr = fmt.Errorf("setns %s: %w", tp.ClientNS, err)
			done <- res
			return
		}
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			res.attempts++
			start := time.Now()
			name, err := getName(addr, time.Second)
			if d := time.Since(start); d > res.slowest {
				res.slowest, res.slowErr = d, err
			}
			if err != nil {
				res.answers["ERR"]++
				res.lastErr = err
			} else {
				res.answers[name]++
				if name == want {
					res.at, res.ok = time.Now(), true
					break
				}
			}
			time.Sleep(interval)
		}
		done <- res
	}()
	return <-done
}

// getName sends GET / to a namesrv at addr on a new connection and returns
// the name it answers with.
func getName(addr string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(c, 64<<10))
	if err != nil {
		return "", err
	}
	_, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(b, []byte("HTTP/1.")) || !bytes.Contains(b[:bytes.IndexByte(b, '\n')], []byte(" 200 ")) {
		return "", fmt.Errorf("not an HTTP 200 answer: %q", b)
	}
	return strings.TrimSpace(string(body)), nil
}

// TestFailover: the active server dies (SIGKILL); with the default health
// settings the first new connection served by the standby comes well
// within a second (asserted with a generous bound); status names the
// automatic failover. The dead server's return does not make it active
// again.
func TestFailover(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
	tp.Start()
	tp.RegisterPort("web-a", 8080, "active")
	tp.RegisterPort("web-b", 8080, "standby")
	url := "http://" + sharedIP + ":8080/"
	addr := sharedIP + ":8080"
	tp.requireAll(url, 20, "web-a", "web-a active, web-b standby")
	// Let the checks run a few rounds on two healthy servers: nothing moves.
	time.Sleep(500 * time.Millisecond)
	tp.requireStates(sharedIP, 8080, map[string]string{"web-a": "active", "web-b": "standby"}, "both servers healthy")

	killed := time.Now()
	tp.killServer(tp.Server("web-a"))
	res := tp.pollUntil(addr, "web-b", 20*time.Millisecond, 10*time.Second)
	if !res.ok {
		t.Fatalf("after killing web-a: no connection answered by web-b within 10s (%d attempts, answers %v, last error %v)\ngateway log:\n%s",
			res.attempts, res.answers, res.lastErr, tp.gwLog())
	}
	failover := res.at.Sub(killed)
	t.Logf("failover: first new connection answered by web-b %d ms after SIGKILL of web-a (%d attempts every 20 ms, answers %v, last error %v; slowest attempt %d ms, error %v)",
		failover.Milliseconds(), res.attempts, res.answers, res.lastErr, res.slowest.Milliseconds(), res.slowErr)
	if failover > 5*time.Second {
		t.Errorf("failover took %v, want well under 5s (the default settings aim at < 1s)", failover)
	}
	tp.requireAll(url, 20, "web-b", "after failover")

	st := tp.healthStatus()
	if state, down, reason := st.member(sharedIP, 8080, "web-b"); state != "active" || down || !strings.Contains(reason, "automatic failover") {
		t.Errorf("status web-b after failover: state %q down %v reason %q, want active, up, reason mentioning automatic failover", state, down, reason)
	}
	if state, down, reason := st.member(sharedIP, 8080, "web-a"); state != "standby" || !down || !strings.Contains(reason, "health check failed") {
		t.Errorf("status web-a after failover: state %q down %v reason %q, want standby, down, reason \"health check failed: ...\"", state, down, reason)
	}
	promoted := false
	for _, e := range st.Events {
		if e.Member == "web-b" && e.What == "promoted" && e.Binding == addr && strings.Contains(e.Why, "automatic failover") && !e.Time.IsZero() {
			promoted = true
		}
	}
	if !promoted {
		t.Errorf("status events = %+v, want one promoting web-b on %s by automatic failover", st.Events, addr)
	}
	if out := tp.MustCLI("status"); !strings.Contains(out, "HEALTH") || !strings.Contains(out, "recent automatic changes") || !strings.Contains(out, "promoted") {
		t.Errorf("vipmux status = %q, want a HEALTH column and the recent automatic changes", out)
	}

	// web-a comes back: it must be marked up, and stay standby.
	s := tp.Server("web-a")
	tp.startProc("namesrv-web-a-restarted", s.NS, namesrvBin, "--name", "web-a", "--listen", ":8080", "--listen", ":9090", "--raw", ":7000")
	tp.waitServer(s)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, down, reason := tp.healthStatus().member(sharedIP, 8080, "web-a")
		if !down {
			if !strings.Contains(reason, "health check passed") {
				t.Errorf("status web-a after its restart: reason %q, want \"health check passed\"", reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web-a still down 10s after its server restarted (reason %q)\ngateway log:\n%s", reason, tp.gwLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // several check rounds: nothing may flap back
	tp.requireStates(sharedIP, 8080, map[string]string{"web-a": "standby", "web-b": "active"}, "after web-a recovered")
	tp.requireAll(url, 20, "web-b", "after web-a recovered")
}

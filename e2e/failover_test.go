//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
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
// namesrv) and returns their pids; see waitGone.
func (tp *Topology) killServer(s *Server) []int {
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
	return pids
}

// waitGone waits until every one of pids has been reaped and returns when
// it saw that. A zombie is not enough: the thread group leader of a Go
// program turns zombie while its other threads, which share its open
// files, still exit, so its listening sockets may still accept for a
// moment; a reaped process has closed them all.
func waitGone(t testing.TB, pids []int, limit time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		alive := 0
		for _, pid := range pids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				alive++
			}
		}
		if alive == 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the processes %v not reaped %v after SIGKILL", alive, pids, limit)
		}
		time.Sleep(time.Millisecond)
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

// attempt is one new connection of connectLoop.
type attempt struct {
	start, end time.Time
	name       string // the server that answered
	err        error
}

// connectLoop starts a new connection to addr every interval (one HTTP/1.0
// request each, as pollUntil sends, answered within timeout) from the
// client namespace until stop is closed, and returns every attempt on
// done once all have ended, in the order they started. Attempts run
// concurrently, so that one that hangs does not hold up the next.
func (tp *Topology) connectLoop(addr string, interval, timeout time.Duration, stop <-chan struct{}) <-chan []attempt {
	tp.t.Helper()
	ns, err := netns.GetFromName(tp.ClientNS)
	if err != nil {
		tp.t.Fatalf("open client namespace %s: %v", tp.ClientNS, err)
	}
	done := make(chan []attempt, 1)
	go func() {
		defer ns.Close()
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			out []attempt
		)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			mu.Lock()
			out = append(out, attempt{start: time.Now()})
			mu.Unlock()
			wg.Go(func() {
				// Never unlocked: the goroutine's exit ends the thread,
				// which must not go back to the pool inside the client
				// namespace.
				runtime.LockOSThread()
				var a attempt
				if err := netns.Set(ns); err != nil {
					a.err = fmt.Errorf("setns %s: %w", tp.ClientNS, err)
				} else {
					a.name, a.err = getName(addr, timeout)
				}
				mu.Lock()
				out[i].name, out[i].err, out[i].end = a.name, a.err, time.Now()
				mu.Unlock()
			})
			select {
			case <-stop:
				wg.Wait()
				done <- out
				return
			case <-tick.C:
			}
		}
	}()
	return done
}

// splitAttempts returns the attempts that started before t and the others.
func splitAttempts(attempts []attempt, t time.Time) (before, after []attempt) {
	for _, a := range attempts {
		if a.start.Before(t) {
			before = append(before, a)
		} else {
			after = append(after, a)
		}
	}
	return before, after
}

// requireServedBy fails the test unless every attempt was answered by
// want; since is when the event that they follow happened.
func requireServedBy(t testing.TB, attempts []attempt, want string, since time.Time, what string) map[string]int {
	t.Helper()
	answers := map[string]int{}
	for i, a := range attempts {
		if a.err != nil {
			answers["ERR"]++
			t.Errorf("attempt %d after %s (started %d ms after it): %v, want it served by %s", i, what, a.start.Sub(since).Milliseconds(), a.err, want)
			continue
		}
		answers[a.name]++
		if a.name != want {
			t.Errorf("attempt %d after %s (started %d ms after it) answered by %q, want %s", i, what, a.start.Sub(since).Milliseconds(), a.name, want)
		}
	}
	return answers
}

// TestFailoverUnseen (issue 14, lever 6): the active server dies (SIGKILL)
// while a client opens a new connection every 20 ms. No connection opened
// after its death fails: the first one's backend dial is refused, the
// gateway dials the standby instead before it completes the client's
// handshake (redispatch) and marks the dead member down at once (passive
// check), which fails the port over; every later one goes to the new
// active. Before the redispatch, the connections between the death and
// the probes' verdict (fall 2 x 100 ms) were refused.
func TestFailoverUnseen(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
	tp.Start()
	tp.RegisterPort("web-a", 8080, "active")
	tp.RegisterPort("web-b", 8080, "standby")
	addr := sharedIP + ":8080"
	tp.requireAll("http://"+addr+"/", 5, "web-a", "web-a active, web-b standby")

	stop := make(chan struct{})
	done := tp.connectLoop(addr, 20*time.Millisecond, 2*time.Second, stop)
	time.Sleep(300 * time.Millisecond) // web-a serves the loop for a while
	pids := tp.killServer(tp.Server("web-a"))
	dead := waitGone(t, pids, 5*time.Second)
	// Well past the probes' own verdict, and a few more rounds of them.
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	before, after := splitAttempts(<-done, dead)
	if len(before) == 0 || before[0].name != "web-a" {
		t.Fatalf("before the kill: first attempt %+v, want one served by web-a", before)
	}
	if len(after) < 20 {
		t.Fatalf("only %d attempts after web-a died, want at least 20 (the loop runs every 20 ms for 1.5 s)", len(after))
	}
	answers := requireServedBy(t, after, "web-b", dead, "web-a died")
	first := after[0]
	t.Logf("after web-a died: %d attempts, answers %v; the first started %d ms after its death and took %d ms",
		len(after), answers, first.start.Sub(dead).Milliseconds(), first.end.Sub(first.start).Milliseconds())
	if t.Failed() {
		t.Logf("gateway log:\n%s", tp.gwLog())
	}

	// The failover went through the table: status and events show it.
	st := tp.healthStatus()
	if state, down, reason := st.member(sharedIP, 8080, "web-a"); state != "standby" || !down || !strings.Contains(reason, "health check failed") {
		t.Errorf("status web-a after its death: state %q down %v reason %q, want standby, down, reason \"health check failed: ...\"", state, down, reason)
	} else {
		t.Logf("web-a: %s", reason)
	}
	if state, down, reason := st.member(sharedIP, 8080, "web-b"); state != "active" || down || !strings.Contains(reason, "automatic failover") {
		t.Errorf("status web-b after web-a's death: state %q down %v reason %q, want active, up, reason mentioning automatic failover", state, down, reason)
	}
}

// TestFailoverSilent: the active server's host goes silent (its link goes
// down: no RST, no ICMP) while a client opens a new connection every
// 20 ms. The connections that arrive meanwhile wait in their backend dial;
// once the probes mark web-a down (fall 2 x 100 ms timeouts) and the
// table fails over, those dials are cut short and redispatched to web-b,
// well before the 30 s dial timeout: every connection opened after the
// silence is served, none waits for the client's 5 s timeout.
func TestFailoverSilent(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"},
		Extra: sharedConfig + "\n[dispatch]\ndial_timeout = \"30s\""})
	tp.Start()
	tp.RegisterPort("web-a", 8080, "active")
	tp.RegisterPort("web-b", 8080, "standby")
	addr := sharedIP + ":8080"
	tp.requireAll("http://"+addr+"/", 5, "web-a", "web-a active, web-b standby")

	stop := make(chan struct{})
	done := tp.connectLoop(addr, 20*time.Millisecond, 5*time.Second, stop)
	time.Sleep(300 * time.Millisecond) // web-a serves the loop for a while
	must(t, "ip", "-n", tp.Server("web-a").NS, "link", "set", "e0", "down")
	silent := time.Now()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	before, after := splitAttempts(<-done, silent)
	if len(before) == 0 || before[0].name != "web-a" {
		t.Fatalf("before the silence: first attempt %+v, want one served by web-a", before)
	}
	if len(after) < 20 {
		t.Fatalf("only %d attempts after web-a went silent, want at least 20", len(after))
	}
	answers := requireServedBy(t, after, "web-b", silent, "web-a went silent")
	var slowest time.Duration
	for _, a := range after {
		slowest = max(slowest, a.end.Sub(a.start))
	}
	t.Logf("after web-a went silent: %d attempts, answers %v; the first took %d ms, the slowest %d ms",
		len(after), answers, after[0].end.Sub(after[0].start).Milliseconds(), slowest.Milliseconds())
	if t.Failed() {
		t.Logf("gateway log:\n%s", tp.gwLog())
	}
	if state, down, reason := tp.healthStatus().member(sharedIP, 8080, "web-a"); state != "standby" || !down || !strings.Contains(reason, "health check failed") {
		t.Errorf("status web-a after it went silent: state %q down %v reason %q, want standby, down, reason \"health check failed: ...\"", state, down, reason)
	} else {
		t.Logf("web-a: %s", reason)
	}
}

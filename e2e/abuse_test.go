//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// rssKB reads VmRSS of pid from /proc, in KiB.
func rssKB(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/status: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	t.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}

// goroutines reads the gateway's goroutine count from GET /debug/vars.
func (tp *Topology) goroutines() int {
	tp.t.Helper()
	r := tp.API("GET", "/debug/vars", "", tp.opts.Token)
	var v struct {
		Goroutines int `json:"goroutines"`
	}
	if r.Code != 200 || json.Unmarshal([]byte(r.Body), &v) != nil {
		tp.t.Fatalf("GET /debug/vars: HTTP %d %s", r.Code, r.Body)
	}
	return v.Goroutines
}

// waitGoroutines polls until the gateway has at most want goroutines, for
// at most timeout; it returns the last count.
func (tp *Topology) waitGoroutines(want int, timeout time.Duration) int {
	n := tp.goroutines()
	for deadline := time.Now().Add(timeout); n > want && time.Now().Before(deadline); n = tp.goroutines() {
		time.Sleep(200 * time.Millisecond)
	}
	return n
}

// TestAbuse (issue 5, the data path under abuse): connections open and
// close without leaking goroutines or memory; a burst of 20,000 SYNs does
// not stop legitimate connections; a backend that never reads blocks
// nobody else.
func TestAbuse(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}})
	g := tp.Start()
	pid := g.proc.cmd.Process.Pid
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "vipmux" {
		t.Fatalf("pid %d is %q, want the vipmux process", pid, comm)
	}
	tp.Register("web-a", "198.18.0.10", tp.Server("web-a").IP)
	tp.Register("web-b", "198.18.0.11", tp.Server("web-b").IP)
	if got := tp.Get("http://198.18.0.11:8080/"); got != "web-b" {
		t.Fatalf("curl 198.18.0.11:8080 = %q, want web-b", got)
	}
	// The baseline: settle after the first connection (time_wait 1 s).
	time.Sleep(2 * time.Second)
	base, baseRSS := tp.goroutines(), rssKB(t, pid)
	t.Logf("baseline: %d goroutines, RSS %d KiB", base, baseRSS)

	// Slack for goroutines that come and go on their own (the control
	// connection of the measurement itself, timers of the stack).
	const slack = 10

	t.Run("leak", func(t *testing.T) {
		tp := tp.With(t)
		for round := range 3 {
			out, errOut, code := tp.Client(90*time.Second, "concurrent", "-n", "300", "http://198.18.0.11:8080/")
			if code != 0 {
				t.Fatalf("tcpclient concurrent -n 300: exit %d %s %s", code, out, errOut)
			}
			n := tp.waitGoroutines(base+slack, 15*time.Second)
			rss := rssKB(t, pid)
			t.Logf("round %d: 300 connections opened and closed: %d goroutines after (baseline %d), RSS %d KiB", round, n, base, rss)
			if n > base+slack {
				t.Errorf("round %d: %d goroutines 15 s after 300 connections closed, baseline %d: leak", round, n, base)
			}
		}
	})

	// Two bursts: the first shows the cost of a full max_in_flight, the
	// second that the cost does not add up (memory is bounded, not leaked).
	var peaks [2]int64
	for burst := range 2 {
		t.Run(fmt.Sprintf("syn burst %d", burst+1), func(t *testing.T) {
			tp := tp.With(t)
			var (
				wg      sync.WaitGroup
				peakRSS int64
				stop    = make(chan struct{})
			)
			wg.Go(func() { // sample RSS every 20 ms, bounded by stop and 2 min
				for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
					if kb := rssKB(t, pid); kb > peakRSS {
						peakRSS = kb
					}
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			})
			var flood struct {
				Sent    int     `json:"sent"`
				Errors  int     `json:"errors"`
				Seconds float64 `json:"seconds"`
			}
			floodDone := make(chan struct{})
			go func() {
				defer close(floodDone)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", tp.ClientNS, tcpclientBin, "synflood", "-n", "20000", "198.18.0.10:8080").Output()
				json.Unmarshal(out, &flood)
			}()
			// 50 sequential requests during and after the burst; each may take
			// up to 20 s (the kernel's SYN retries, 1+2+4+8 s, are the client's
			// retries) and one retry on a new connection, as an HTTP client
			// would: dial-first turns every spoofed SYN into a backend
			// connection, and an overloaded backend may drop one (reported in
			// the log as RETRY; see issue notes).
			start := time.Now()
			out, errOut, code := tp.Client(5*time.Minute, "get", "-n", "50", "-retries", "1", "-timeout", "20s", "http://198.18.0.10:8080/")
			took := time.Since(start)
			<-floodDone
			close(stop)
			wg.Wait()
			if want := strings.Repeat("web-a\n", 50); code != 0 || out != want {
				t.Errorf("50 requests during a 20,000-SYN burst: exit %d, %d of 50 answered web-a\n%s%s", code, strings.Count(out, "web-a\n"), out, errOut)
			}
			if flood.Sent < 20000 {
				t.Errorf("synflood sent %d SYNs (%d errors), want 20000", flood.Sent, flood.Errors)
			}
			t.Logf("burst: %d SYNs in %.2f s; 50 requests in %v (%s); RSS baseline %d KiB, peak %d KiB",
				flood.Sent, flood.Seconds, took.Round(time.Millisecond), strings.TrimSpace(errOut), baseRSS, peakRSS)
			// The bound: dispatch.max_in_flight (8192 by default) caps the SYNs
			// being dialled at once, each holding a goroutine, a gVisor
			// endpoint with its buffers and a backend socket: about 25 KiB,
			// so about 200 MiB at most (measured: ~220 MiB over the baseline,
			// which Go keeps as heap after the burst). 512 MiB over the
			// baseline would mean the cap does not hold. A leak would make the
			// second burst cost about as much again as the first; the GC's
			// timing moves a peak by a few tens of MiB, so the second peak may
			// exceed the first by at most half the first one's growth.
			peaks[burst] = peakRSS
			if peakRSS-baseRSS > 512<<10 {
				t.Errorf("RSS grew from %d KiB to %d KiB during the burst, want at most 512 MiB more", baseRSS, peakRSS)
			}
			if first := peaks[0] - baseRSS; burst == 1 && peaks[1]-baseRSS > first+first/2 {
				t.Errorf("RSS peak %d KiB in the second burst, %d KiB in the first (baseline %d KiB): memory grows with every burst", peaks[1], peaks[0], baseRSS)
			}
			n := tp.waitGoroutines(base+slack, 30*time.Second)
			t.Logf("after the burst: %d goroutines (baseline %d), RSS %d KiB", n, base, rssKB(t, pid))
			if n > base+slack {
				t.Errorf("%d goroutines 30 s after the burst, baseline %d: leak", n, base)
			}
		})
	}

	t.Run("backend never reads", func(t *testing.T) {
		tp := tp.With(t)
		a := tp.Server("web-a")
		tp.startProc("sink", a.NS, tcpclientBin, "sink", "-timeout", "60s", ":7001")
		time.Sleep(200 * time.Millisecond)
		tp.Register("web-sink", "198.18.0.12", a.IP+":7001")
		s := tp.startStream("198.18.0.12:7001", 9, "-interval", "1ms", "-timeout", "60s")
		if l := s.next(t, 10*time.Second); !strings.Contains(l, "connected") {
			t.Fatalf("tcpclient stream to the sink: first line %q, want connected", l)
		}
		mark := func() int64 {
			s.stdin.Write([]byte("mark\n"))
			var m struct {
				Sent int64 `json:"sent"`
			}
			json.Unmarshal([]byte(s.next(t, 5*time.Second)), &m)
			return m.Sent
		}
		// Wait until the windows are full: the sent count stops growing.
		var last int64 = -1
		for i := 0; i < 30; i++ {
			time.Sleep(500 * time.Millisecond)
			m := mark()
			if m == last {
				break
			}
			last = m
		}
		t.Logf("stream into a backend that never reads stalled at %d bytes", last)
		out, errOut, code := tp.Client(60*time.Second, "get", "-n", "20", "http://198.18.0.11:8080/")
		if want := strings.Repeat("web-b\n", 20); code != 0 || out != want {
			t.Errorf("20 requests to web-b while a stream to the sink is stalled: exit %d\n%s%s", code, out, errOut)
		}
		if got := tp.Get("http://198.18.0.10:8080/"); got != "web-a" {
			t.Errorf("curl web-a while the stream is stalled = %q", got)
		}
		tp.MustCLI("deregister", "--name", "web-sink", "--ip", "198.18.0.12")
	})
	n := tp.waitGoroutines(base+slack, 15*time.Second)
	t.Logf("end: %d goroutines (baseline %d), RSS %d KiB (baseline %d KiB)", n, base, rssKB(t, pid), baseRSS)
}

// Command loadgen is vipmux's benchmark client: a bounded load generator
// that runs in the benchmark's client namespace and prints one JSON object
// per run. It is not a test; `make bench` drives it.
//
//	loadgen conns  -addr 198.18.0.10:8080 -c 32 -d 10s     # new connections/s: connect, GET, the server closes
//	loadgen conns  -closer client -addr ...                 # the same, the client closes first (a key-value client)
//	loadgen reqs   -addr 198.18.0.10:8080 -c 50 -d 10s     # small requests/s over keep-alive connections, as fast as they go
//	loadgen rate   -addr 198.18.0.10:8080 -rate 2000 -d 10s # keep-alive latency at a fixed rate
//	loadgen idle   -addr 198.18.0.10:8080 -n 10000 -hold 10s # hold idle proxied connections
//	loadgen follow -addr 198.18.0.100:8080 -want web-b -d 5s # ms until a new connection reaches -want
//	loadgen follow -addr 198.18.0.30:8080 -every 10ms -d 10s # ms until a new connection is served at all, one started every 10 ms
//	loadgen register -api http://127.0.0.1:7070 -n 10000 -base 198.18.100.0 -backend 198.19.0.2 [-batch 1000]
//	loadgen switch -api http://127.0.0.1:7070 -port 8080 -want web-b    # one switch through the API, timed
//	loadgen arp -iface c0 -base 198.18.100.0 -n 10000 -count 1000 # ARP answer time of random IPs in a range
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen conns|rate|idle|follow|register|switch|arp [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "", "server host:port")
	conc := fs.Int("c", 32, "concurrent connections (conns, rate)")
	dur := fs.Duration("d", 10*time.Second, "duration (conns, rate, follow)")
	rate := fs.Int("rate", 1000, "requests per second (rate)")
	n := fs.Int("n", 10000, "connections to hold (idle)")
	hold := fs.Duration("hold", 10*time.Second, "how long to hold them (idle)")
	want := fs.String("want", "", "server name to wait for (follow); empty: any server")
	every := fs.Duration("every", 0, "start a new connection every interval, each waiting up to 1s, instead of one after another (follow)")
	api := fs.String("api", "", "control API URL (register)")
	base := fs.String("base", "198.18.100.0", "first IP to register (register)")
	backend := fs.String("backend", "", "backend of every registration (register)")
	port := fs.Int("port", 0, "mode-2 port to switch (switch)")
	closer := fs.String("closer", "server", "who closes each connection first: server (Connection: close) or client (conns)")
	batchSize := fs.Int("batch", 0, "registrations per POST /v1/register/batch request (register); 0: one POST /v1/register each")
	iface := fs.String("iface", "", "interface to send ARP requests on (arp)")
	count := fs.Int("count", 1000, "ARP requests, one random IP of -base..-base+n-1 each (arp)")
	timeout := fs.Duration("timeout", time.Second, "how long to wait for each ARP answer (arp)")
	_ = fs.Parse(os.Args[2:])
	if *addr == "" && os.Args[1] != "register" && os.Args[1] != "switch" && os.Args[1] != "arp" {
		fmt.Fprintln(os.Stderr, "loadgen: -addr is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var (
		out any
		err error
	)
	switch os.Args[1] {
	case "conns":
		if *closer != "server" && *closer != "client" {
			err = fmt.Errorf("-closer: want server or client, not %q", *closer)
			break
		}
		out, err = conns(ctx, *addr, *conc, *dur, *closer == "client")
	case "reqs":
		out, err = reqs(ctx, *addr, *conc, *dur)
	case "rate":
		out, err = fixedRate(ctx, *addr, *conc, *rate, *dur)
	case "idle":
		out, err = idle(ctx, *addr, *n, *hold)
	case "follow":
		if *every > 0 {
			out, err = followEvery(ctx, *addr, *want, *dur, *every)
		} else {
			out, err = follow(ctx, *addr, *want, *dur)
		}
	case "register":
		out, err = register(ctx, *api, *base, *backend, *n, *conc, *batchSize)
	case "switch":
		out, err = switchTo(ctx, *api, *port, *want)
	case "arp":
		out, err = arpTimes(ctx, *iface, *base, *n, *count, *timeout)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

// request sends one GET on c and reads the whole answer; it returns the
// body.
func request(c net.Conn, br *bufio.Reader, host string, close bool) (string, error) {
	hdr := "Connection: keep-alive"
	if close {
		hdr = "Connection: close"
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", host, hdr); err != nil {
		return "", err
	}
	length := -1
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-length") {
			fmt.Sscan(strings.TrimSpace(v), &length)
		}
	}
	if length < 0 {
		return "", errors.New("answer without Content-Length")
	}
	body := make([]byte, length)
	_, err := io.ReadFull(br, body)
	return string(body), err
}

// ConnsResult is the outcome of the conns mode.
type ConnsResult struct {
	Mode     string  `json:"mode"`
	Done     int64   `json:"done"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"per_sec"`
	FirstErr string  `json:"first_error,omitempty"`
}

// conns opens a connection, sends one request, reads the answer and closes,
// conc at a time. With clientCloses the request asks for keep-alive and
// the client closes first, as a key-value or database client does after one
// command; otherwise it asks for Connection: close and the server closes
// first, as HTTP/1.0-style clients see it.
func conns(ctx context.Context, addr string, conc int, d time.Duration, clientCloses bool) (ConnsResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var done, errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			dialer := net.Dialer{Timeout: 2 * time.Second}
			for ctx.Err() == nil {
				c, err := dialer.DialContext(ctx, "tcp", addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(3 * time.Second))
					_, err = request(c, bufio.NewReader(c), addr, !clientCloses)
					c.Close()
				}
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	mode := "conns"
	if clientCloses {
		mode = "conns-client-closes"
	}
	r := ConnsResult{Mode: mode, Done: done.Load(), Errors: errs.Load(), Seconds: secs, PerSec: float64(done.Load()) / secs}
	if e, ok := firstErr.Load().(string); ok {
		r.FirstErr = e
	}
	return r, nil
}

// ReqsResult is the outcome of the reqs mode; latencies in microseconds.
type ReqsResult struct {
	Mode    string  `json:"mode"`
	Conns   int     `json:"conns"`
	Done    int64   `json:"done"`
	Errors  int64   `json:"errors"`
	PerSec  float64 `json:"per_sec"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	Seconds float64 `json:"seconds"`
}

// reqs sends small requests back to back on conc keep-alive connections for
// d: the request rate a pipelined-free client (a key-value or database
// client waiting for each answer) gets. Latency is per request, from send
// to the end of its answer.
func reqs(ctx context.Context, addr string, conc int, d time.Duration) (ReqsResult, error) {
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs atomic.Int64
		wg   sync.WaitGroup
	)
	// Connect first, then time: the figure is requests, not handshakes.
	cs := make([]net.Conn, 0, conc)
	for range conc {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			for _, c := range cs {
				c.Close()
			}
			return ReqsResult{}, fmt.Errorf("connect: %w", err)
		}
		cs = append(cs, c)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	for _, c := range cs {
		wg.Go(func() {
			defer c.Close()
			br := bufio.NewReader(c)
			local := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				c.SetDeadline(time.Now().Add(3 * time.Second))
				t0 := time.Now()
				if _, err := request(c, br, addr, false); err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					break
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if len(lat) == 0 {
		return ReqsResult{}, fmt.Errorf("no request completed (%d errors)", errs.Load())
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	return ReqsResult{
		Mode: "reqs", Conns: conc, Done: int64(len(lat)), Errors: errs.Load(), PerSec: float64(len(lat)) / secs,
		P50us: q(0.5), P99us: q(0.99), Seconds: secs,
	}, nil
}

// RateResult is the outcome of the rate mode; latencies in microseconds.
type RateResult struct {
	Mode    string  `json:"mode"`
	Target  int     `json:"target_rate"`
	Done    int     `json:"done"`
	Errors  int64   `json:"errors"`
	Missed  int64   `json:"missed"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	P999us  float64 `json:"p999_us"`
	MaxUs   float64 `json:"max_us"`
	Seconds float64 `json:"seconds"`
}

// fixedRate sends requests on conc keep-alive connections at rate per
// second in all, measuring each from its scheduled time (no coordinated
// omission: a late send counts its wait).
func fixedRate(ctx context.Context, addr string, conc, rate int, d time.Duration) (RateResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	interval := time.Duration(float64(time.Second) * float64(conc) / float64(rate))
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errs   atomic.Int64
		missed atomic.Int64
		wg     sync.WaitGroup
	)
	start := time.Now()
	for i := range conc {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			local := make([]time.Duration, 0, int(d/interval)+1)
			next := start.Add(interval * time.Duration(i) / time.Duration(conc))
			for ctx.Err() == nil {
				if w := time.Until(next); w > 0 {
					select {
					case <-time.After(w):
					case <-ctx.Done():
						continue
					}
				} else if -w > interval {
					missed.Add(1)
				}
				c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := request(c, br, addr, false); err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					return
				}
				local = append(local, time.Since(next))
				next = next.Add(interval)
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(lat) == 0 {
		return RateResult{}, fmt.Errorf("no request completed (%d errors)", errs.Load())
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	return RateResult{
		Mode: "rate", Target: rate, Done: len(lat), Errors: errs.Load(), Missed: missed.Load(),
		P50us: q(0.5), P99us: q(0.99), P999us: q(0.999), MaxUs: q(1),
		Seconds: time.Since(start).Seconds(),
	}, nil
}

// IdleResult is the outcome of the idle mode.
type IdleResult struct {
	Mode   string `json:"mode"`
	Opened int    `json:"opened"`
	Errors int    `json:"errors"`
}

// idle opens n connections, proves each with one request, holds them for
// hold (the benchmark measures the gateway meanwhile), then closes them.
func idle(ctx context.Context, addr string, n int, hold time.Duration) (IdleResult, error) {
	var cs []net.Conn
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	errs := 0
	for i := 0; i < n && ctx.Err() == nil; i++ {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err = request(c, bufio.NewReader(c), addr, false); err == nil {
				c.SetDeadline(time.Time{})
				cs = append(cs, c)
				continue
			}
			c.Close()
		}
		errs++
	}
	fmt.Fprintf(os.Stderr, "loadgen idle: holding %d connections\n", len(cs))
	select {
	case <-time.After(hold):
	case <-ctx.Done():
	}
	return IdleResult{Mode: "idle", Opened: len(cs), Errors: errs}, nil
}

// FollowResult is the outcome of the follow mode.
type FollowResult struct {
	Mode     string  `json:"mode"`
	Want     string  `json:"want"`
	Ms       float64 `json:"ms"`
	AtUnixNs int64   `json:"at_unix_ns"`
	Attempts int     `json:"attempts"`
	Failed   int     `json:"failed"`
}

// follow makes new connections back to back until one is answered by
// want; it prints the time from its start (the benchmark starts it right
// before the switch or the kill) to that answer.
func follow(ctx context.Context, addr, want string, d time.Duration) (FollowResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	r := FollowResult{Mode: "follow", Want: want}
	for ctx.Err() == nil {
		r.Attempts++
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err != nil {
			r.Failed++
			time.Sleep(time.Millisecond)
			continue
		}
		c.SetDeadline(time.Now().Add(time.Second))
		body, err := request(c, bufio.NewReader(c), addr, true)
		c.Close()
		if err != nil {
			r.Failed++
			continue
		}
		if want == "" || strings.TrimSpace(body) == want {
			now := time.Now()
			r.Ms, r.AtUnixNs = float64(now.Sub(start).Microseconds())/1e3, now.UnixNano()
			return r, nil
		}
	}
	return r, fmt.Errorf("no connection reached %s within %v (%d attempts, %d failed)", want, d, r.Attempts, r.Failed)
}

// followEvery is follow with a connection started every interval, each in
// its own goroutine and given a second to connect and be answered, so that
// an attempt lost to a dead gateway (its SYN goes to a MAC nobody reads)
// does not hold the next one back: the first answer comes within one
// interval of the moment the address is served again. The benchmark
// starts it right after a kill -9 (the cluster takeover), so every
// connection it makes is made after the kill.
func followEvery(ctx context.Context, addr, want string, d, every time.Duration) (FollowResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	r := FollowResult{Mode: "follow", Want: want}
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
	)
	served := make(chan time.Time, 1)
	attempt := func() {
		defer wg.Done()
		var dialer net.Dialer
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		defer dcancel()
		c, err := dialer.DialContext(dctx, "tcp", addr)
		if err != nil {
			if ctx.Err() == nil { // not one that gave up because another was served
				failed.Add(1)
			}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		body, err := request(c, bufio.NewReader(c), addr, true)
		if err != nil || (want != "" && strings.TrimSpace(body) != want) {
			if ctx.Err() == nil {
				failed.Add(1)
			}
			return
		}
		select {
		case served <- time.Now():
		default: // another attempt was served first
		}
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var at time.Time
	for at.IsZero() && ctx.Err() == nil {
		r.Attempts++
		wg.Add(1)
		go attempt()
		select {
		case at = <-served:
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	cancel() // attempts still waiting give up
	wg.Wait()
	if at.IsZero() {
		select {
		case at = <-served: // served as the time ran out
		default:
		}
	}
	r.Failed = int(failed.Load())
	if at.IsZero() {
		return r, fmt.Errorf("no connection reached %s within %v (%d attempts, %d failed)", cmp.Or(want, "a server"), d, r.Attempts, r.Failed)
	}
	r.Ms, r.AtUnixNs = float64(at.Sub(start).Microseconds())/1e3, at.UnixNano()
	return r, nil
}

// SwitchResult is the outcome of the switch mode: when the request left and
// when its answer came back (wall clock, comparable with follow's AtUnixNs
// across namespaces).
type SwitchResult struct {
	Mode     string  `json:"mode"`
	SentNs   int64   `json:"sent_unix_ns"`
	AnswerNs int64   `json:"answer_unix_ns"`
	Ms       float64 `json:"ms"`
}

// switchTo makes want the active member of the shared address's port
// through the control API, on a connection opened beforehand so that only
// the request itself is timed.
func switchTo(ctx context.Context, api string, port int, want string) (SwitchResult, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	// Warm the keep-alive connection: the timed request reuses it.
	if resp, err := client.Get(api + "/healthz"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	body := fmt.Sprintf(`{"port":%d,"to":%q}`, port, want)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api+"/v1/switch", strings.NewReader(body))
	if err != nil {
		return SwitchResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return SwitchResult{}, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	done := time.Now()
	if resp.StatusCode != http.StatusOK {
		return SwitchResult{}, fmt.Errorf("switch: %s: %s", resp.Status, msg)
	}
	return SwitchResult{Mode: "switch", SentNs: sent.UnixNano(), AnswerNs: done.UnixNano(), Ms: float64(done.Sub(sent).Microseconds()) / 1e3}, nil
}

// RegisterResult is the outcome of the register mode.
type RegisterResult struct {
	Mode    string  `json:"mode"`
	Done    int     `json:"done"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_sec"`
	Last    string  `json:"last_ip"`
}

// register registers n mode-1 IPs from base upward through the control
// API, conc requests at a time, and reports how long the gateway took:
// with batch 0 one POST /v1/register per IP, otherwise batch IPs per POST
// /v1/register/batch.
func register(ctx context.Context, api, base, backend string, n, conc, batch int) (RegisterResult, error) {
	ip, err := netip.ParseAddr(base)
	if err != nil {
		return RegisterResult{}, fmt.Errorf("-base: %w", err)
	}
	if batch < 0 {
		return RegisterResult{}, fmt.Errorf("-batch %d: want 0 or more", batch)
	}
	ips := make([]netip.Addr, n)
	for i := range ips {
		ips[i] = ip
		ip = ip.Next()
	}
	reg := func(i int) string {
		return fmt.Sprintf(`{"name":"s%d","ip":"%s","backend":"%s"}`, i, ips[i], backend)
	}
	// Each request is a range [from, to) of ips.
	path, per := "/v1/register", 1
	if batch > 0 {
		path, per = "/v1/register/batch", batch
	}
	body := func(from, to int) string {
		if batch == 0 {
			return reg(from)
		}
		var b strings.Builder
		b.WriteString(`{"registrations":[`)
		for i := from; i < to; i++ {
			if i > from {
				b.WriteByte(',')
			}
			b.WriteString(reg(i))
		}
		b.WriteString("]}")
		return b.String()
	}
	var (
		next atomic.Int64
		fail atomic.Value
		wg   sync.WaitGroup
	)
	client := &http.Client{Timeout: 60 * time.Second}
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil && fail.Load() == nil {
				from := int(next.Add(int64(per)) - int64(per))
				if from >= n {
					return
				}
				to := min(from+per, n)
				resp, err := client.Post(api+path, "application/json", strings.NewReader(body(from, to)))
				if err == nil {
					msg, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("register %s..%s: %s: %s", ips[from], ips[to-1], resp.Status, msg)
					}
				}
				if err != nil {
					fail.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	if err, ok := fail.Load().(error); ok {
		return RegisterResult{}, err
	}
	secs := time.Since(start).Seconds()
	return RegisterResult{Mode: "register", Done: n, Seconds: secs, PerSec: float64(n) / secs, Last: ips[n-1].String()}, nil
}

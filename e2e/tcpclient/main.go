// Command tcpclient is the kernel client of the e2e suite: the tests run it
// in the client namespace (ip netns exec) to dial vipmux from a real kernel
// TCP stack. Every subcommand is bounded in time and prints its result on
// stdout, mostly as one JSON object, so a test can parse it.
//
//	tcpclient get [-n 100] [-keepalive] URL          one line per request: the body, or "ERR <error>"
//	tcpclient concurrent -n 500 URL                  hold n connections open at once, then GET / on each
//	tcpclient download -n BYTES -seed S URL          GET URL/bytes?n=&seed=, sha256 of what arrived
//	tcpclient upload -n BYTES -seed S URL            POST URL/sha256 the pattern bytes, the server's reply
//	tcpclient halfclose -n BYTES -seed S HOST:PORT   write, shutdown(SHUT_WR), read the reply to EOF
//	tcpclient dial [-timeout 10s] HOST:PORT          {"ok":..,"err":..,"ms":..}
//	tcpclient stream -seed S HOST:PORT               send until stdin closes; "mark" lines on stdin report progress
//	tcpclient register -n 200 CONTROL_URL            register p0..p(n-1) on 198.18.0.10.. (mode 1) as fast as possible; "ok IP" per 200
//	tcpclient synflood -n 20000 [-src IP] HOST:PORT   n raw SYNs from -src (default 198.18.0.1), random source ports; {"sent":..}
//	tcpclient idle [-timeout 30s] HOST:PORT          connect, send nothing, wait for the peer to close; {"ok":..,"err":..,"ms":..}
//	tcpclient sink [-timeout 60s] :PORT              accept connections and never read them, until the timeout
//	tcpclient streams -n 100 -seed S HOST:PORT       stream on n connections at once until stdin closes (see streams)
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vipmux/vipmux/e2e/pattern"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: tcpclient get|concurrent|download|upload|halfclose|dial|stream ...")
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	n := fs.Int64("n", 1, "count (get, concurrent) or bytes (download, upload, halfclose)")
	seed := fs.Uint64("seed", 1, "pattern seed")
	timeout := fs.Duration("timeout", 0, "overall or per-operation timeout (0: subcommand default)")
	keepalive := fs.Bool("keepalive", false, "get: reuse one connection")
	retries := fs.Int("retries", 0, "get: new connections tried after a failed request, each reported on stderr")
	interval := fs.Duration("interval", 10*time.Millisecond, "stream: pause between writes")
	src := fs.String("src", "198.18.0.1", "synflood: source address, in 198.18.0.0/15")
	fs.Parse(args)
	if fs.NArg() != 1 {
		fail("%s: need exactly one URL or HOST:PORT", cmd)
	}
	target := fs.Arg(0)
	def := func(d time.Duration) time.Duration {
		if *timeout > 0 {
			return *timeout
		}
		return d
	}
	switch cmd {
	case "get":
		get(target, int(*n), *keepalive, *retries, def(5*time.Second))
	case "concurrent":
		concurrent(target, int(*n), def(60*time.Second))
	case "download":
		download(target, *n, *seed, def(300*time.Second))
	case "upload":
		upload(target, *n, *seed, def(300*time.Second))
	case "halfclose":
		halfclose(target, *n, *seed, def(30*time.Second))
	case "dial":
		dial(target, def(10*time.Second))
	case "stream":
		stream(target, *seed, *interval, def(120*time.Second))
	case "register":
		registerLoop(target, int(*n), def(60*time.Second))
	case "synflood":
		synflood(target, *src, int(*n), def(30*time.Second))
	case "idle":
		idle(target, def(30*time.Second))
	case "sink":
		sink(target, def(60*time.Second))
	case "streams":
		streams(target, int(*n), *seed, *interval, def(120*time.Second))
	default:
		fail("unknown subcommand %q", cmd)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tcpclient: "+format+"\n", args...)
	os.Exit(2)
}

func printJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("marshal: %v", err)
	}
	fmt.Println(string(b))
}

func get(url string, n int, keepalive bool, retries int, timeout time.Duration) {
	c := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DisableKeepAlives: !keepalive, Proxy: nil},
	}
	bad := false
	var maxD time.Duration
	slow := 0
	defer func() {
		fmt.Fprintf(os.Stderr, "latency: n=%d max_ms=%d slow_over_500ms=%d\n", n, maxD.Milliseconds(), slow)
	}()
	for range n {
		start := time.Now()
		body, err := getOnce(c, url)
		for try := 0; err != nil && try < retries; try++ {
			fmt.Fprintf(os.Stderr, "RETRY after %v\n", err)
			body, err = getOnce(c, url)
		}
		d := time.Since(start)
		maxD = max(maxD, d)
		if d > 500*time.Millisecond {
			slow++
		}
		if err != nil {
			bad = true
			fmt.Printf("ERR %v\n", err)
			continue
		}
		fmt.Println(strings.TrimSpace(body))
	}
	if bad {
		fmt.Fprintf(os.Stderr, "latency: n=%d max_ms=%d slow_over_500ms=%d\n", n, maxD.Milliseconds(), slow)
		os.Exit(1)
	}
}

func getOnce(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

// concurrent first opens n connections and holds them all, so that the
// gateway really carries n at once, then sends one request on each and reads
// every answer.
func concurrent(url string, n int, timeout time.Duration) {
	host := strings.TrimPrefix(url, "http://")
	host, _, _ = strings.Cut(host, "/")
	deadline := time.Now().Add(timeout)

	type result struct {
		name string
		err  error
	}
	conns := make([]net.Conn, n)
	results := make([]result, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			d := net.Dialer{Deadline: deadline}
			c, err := d.Dial("tcp", host)
			if err != nil {
				results[i].err = fmt.Errorf("dial: %w", err)
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	held := 0
	for _, c := range conns {
		if c != nil {
			held++
		}
	}
	dialed := time.Since(start)
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			defer c.Close()
			c.SetDeadline(deadline)
			if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
				results[i].err = fmt.Errorf("write: %w", err)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results[i].err = fmt.Errorf("read response: %w", err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				results[i].err = fmt.Errorf("read body: %w", err)
				return
			}
			results[i].name = strings.TrimSpace(string(b))
		})
	}
	wg.Wait()
	out := struct {
		OK      int            `json:"ok"`
		Held    int            `json:"held"`
		Failed  int            `json:"failed"`
		Names   map[string]int `json:"names"`
		Errors  []string       `json:"errors,omitempty"`
		DialMS  int64          `json:"dial_ms"`
		TotalMS int64          `json:"total_ms"`
	}{Names: map[string]int{}, Held: held}
	for _, r := range results {
		if r.err != nil {
			out.Failed++
			if len(out.Errors) < 10 {
				out.Errors = append(out.Errors, r.err.Error())
			}
			continue
		}
		out.OK++
		out.Names[r.name]++
	}
	out.DialMS = dialed.Milliseconds()
	out.TotalMS = time.Since(start).Milliseconds()
	printJSON(out)
}

type transfer struct {
	Bytes   int64   `json:"bytes"`
	SHA256  string  `json:"sha256"`
	Reply   string  `json:"reply,omitempty"`
	Server  string  `json:"server,omitempty"`
	Err     string  `json:"err,omitempty"`
	Seconds float64 `json:"seconds"`
}

func download(base string, n int64, seed uint64, timeout time.Duration) {
	start := time.Now()
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
	var out transfer
	defer func() { out.Seconds = time.Since(start).Seconds(); printJSON(out) }()
	resp, err := c.Get(fmt.Sprintf("%s/bytes?n=%d&seed=%d", strings.TrimSuffix(base, "/"), n, seed))
	if err != nil {
		out.Err = err.Error()
		return
	}
	defer resp.Body.Close()
	out.Server = resp.Header.Get("X-Server")
	h := sha256.New()
	out.Bytes, err = io.CopyBuffer(h, resp.Body, make([]byte, 256<<10))
	if err != nil {
		out.Err = err.Error()
	}
	out.SHA256 = hex.EncodeToString(h.Sum(nil))
}

func upload(base string, n int64, seed uint64, timeout time.Duration) {
	start := time.Now()
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil}}
	var out transfer
	defer func() { out.Seconds = time.Since(start).Seconds(); printJSON(out) }()
	h := sha256.New()
	body := io.TeeReader(pattern.NewReader(seed, n), h)
	req, err := http.NewRequest("POST", strings.TrimSuffix(base, "/")+"/sha256", body)
	if err != nil {
		out.Err = err.Error()
		return
	}
	req.ContentLength = n
	resp, err := c.Do(req)
	if err != nil {
		out.Err = err.Error()
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		out.Err = err.Error()
	}
	out.Bytes = n
	out.Server = resp.Header.Get("X-Server")
	out.Reply = strings.TrimSpace(string(b))
	out.SHA256 = hex.EncodeToString(h.Sum(nil))
}

func halfclose(addr string, n int64, seed uint64, timeout time.Duration) {
	start := time.Now()
	var out transfer
	defer func() { out.Seconds = time.Since(start).Seconds(); printJSON(out) }()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		out.Err = err.Error()
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	h := sha256.New()
	out.Bytes, err = io.Copy(c, io.TeeReader(pattern.NewReader(seed, n), h))
	out.SHA256 = hex.EncodeToString(h.Sum(nil))
	if err != nil {
		out.Err = "write: " + err.Error()
		return
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		out.Err = "shutdown write: " + err.Error()
		return
	}
	b, err := io.ReadAll(io.LimitReader(c, 4096))
	out.Reply = strings.TrimSpace(string(b))
	if err != nil {
		out.Err = "read reply: " + err.Error()
	}
}

func dial(addr string, timeout time.Duration) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, timeout)
	out := struct {
		OK  bool   `json:"ok"`
		Err string `json:"err,omitempty"`
		MS  int64  `json:"ms"`
	}{OK: err == nil, MS: time.Since(start).Milliseconds()}
	if err != nil {
		out.Err = err.Error()
	} else {
		c.Close()
	}
	printJSON(out)
}

// idle connects to addr, sends nothing and reads until the peer closes
// (EOF or RST) or timeout passes: ok is true when the peer closed, ms is
// how long the connection lived.
func idle(addr string, timeout time.Duration) {
	out := struct {
		OK  bool   `json:"ok"`
		Err string `json:"err,omitempty"`
		MS  int64  `json:"ms"`
	}{}
	defer func() { printJSON(out) }()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		out.Err = "dial: " + err.Error()
		return
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(start.Add(timeout))
	_, err = c.Read(make([]byte, 1))
	out.MS = time.Since(start).Milliseconds()
	var ne net.Error
	switch {
	case err == nil:
		out.Err = "the peer sent data"
	case errors.As(err, &ne) && ne.Timeout():
		out.Err = "still open after " + timeout.String()
	default:
		out.OK, out.Err = true, err.Error()
	}
}

// stream keeps writing pattern bytes until stdin reaches EOF, then
// half-closes and reads the server's reply. Each "mark" line on stdin prints
// {"event":"mark","sent":N} so the caller can tell that bytes kept flowing
// after a point in time.
func stream(addr string, seed uint64, interval, timeout time.Duration) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out transfer
	defer func() { out.Seconds = time.Since(start).Seconds(); printJSON(out) }()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		out.Err = err.Error()
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	printJSON(map[string]any{"event": "connected"})

	var mu sync.Mutex
	sent := int64(0)
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "mark" {
				mu.Lock()
				printJSON(map[string]any{"event": "mark", "sent": sent})
				mu.Unlock()
			}
		}
	}()
	h := sha256.New()
	src := pattern.NewReader(seed, 1<<62)
	buf := make([]byte, 16<<10)
	var werr error
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-ctx.Done():
			werr = ctx.Err()
			break loop
		case <-time.After(interval):
		}
		io.ReadFull(src, buf)
		if _, err := c.Write(buf); err != nil {
			werr = err
			break
		}
		h.Write(buf)
		mu.Lock()
		sent += int64(len(buf))
		mu.Unlock()
	}
	mu.Lock()
	out.Bytes = sent
	mu.Unlock()
	out.SHA256 = hex.EncodeToString(h.Sum(nil))
	if werr != nil {
		out.Err = "write: " + werr.Error()
		return
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		out.Err = "shutdown write: " + err.Error()
		return
	}
	b, err := io.ReadAll(io.LimitReader(c, 4096))
	out.Reply = strings.TrimSpace(string(b))
	if err != nil && !errors.Is(err, io.EOF) {
		out.Err = "read reply: " + err.Error()
	}
}

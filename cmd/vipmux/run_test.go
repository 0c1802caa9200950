package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/registry"
)

// The test binary doubles as the command that vipmux run starts: with
// VIPMUX_TEST_HELPER set, TestMain runs helperMain instead of the tests.
// With VIPMUX_TEST_MAIN set it is vipmux itself (completion_test.go).
func TestMain(m *testing.M) {
	if os.Getenv("VIPMUX_TEST_HELPER") != "" {
		os.Exit(helperMain())
	}
	if os.Getenv("VIPMUX_TEST_MAIN") != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperMain is a tiny server application, configured by environment:
//
//	HELPER_LISTEN=addr   accept (and close) connections on addr
//	HELPER_SLEEP=dur     then wait this long (default 10s) ...
//	HELPER_EXIT=n        ... and exit n (default 0)
//	HELPER_KILLSELF=1    ... and die by SIGKILL instead
//	HELPER_SIGEXIT=n     on SIGTERM or SIGINT, exit n at once (default 0)
func helperMain() int {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, os.Interrupt)
	if addr := os.Getenv("HELPER_LISTEN"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return 99
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	sleep := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("HELPER_SLEEP")); err == nil {
		sleep = d
	}
	select {
	case <-sigc:
		n, _ := strconv.Atoi(os.Getenv("HELPER_SIGEXIT"))
		return n
	case <-time.After(sleep):
	}
	if os.Getenv("HELPER_KILLSELF") != "" {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Second)
	}
	n, _ := strconv.Atoi(os.Getenv("HELPER_EXIT"))
	return n
}

// gateway is a control API over a real registry, counting calls per path.
type gateway struct {
	reg *registry.Registry
	url string

	mu         sync.Mutex
	calls      map[string]int
	failRenews int // answer this many renewals 503
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	reg, err := registry.New(registry.Options{Networks: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}, AllowLoopbackBackends: true})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	h, err := control.NewHandler(control.Options{Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("control.NewHandler: %v", err)
	}
	g := &gateway{reg: reg, calls: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.calls[r.URL.Path]++
		fail := r.URL.Path == control.PathRenew && g.failRenews > 0
		if fail {
			g.failRenews--
		}
		g.mu.Unlock()
		if fail {
			http.Error(w, `{"error":"try later"}`, http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reg.RunExpiry(ctx, 10*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	g.url = srv.URL
	return g
}

func (g *gateway) count(path string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[path]
}

// registered reports whether name holds ip (mode 1).
func (g *gateway) registered(name, ip string) bool {
	b, ok := g.reg.Table().Binding(registry.Key{IP: netip.MustParseAddr(ip)})
	return ok && b.Has(name)
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePort returns a loopback address that nothing listens on (yet).
func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// helperOptions returns runOptions that start the helper with env.
func helperOptions(t *testing.T, g *gateway, ready netip.AddrPort, ttl time.Duration, env ...string) (runOptions, chan os.Signal, *bytes.Buffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIPMUX_TEST_HELPER", "1")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	sigc := make(chan os.Signal, 1)
	var logBuf bytes.Buffer
	o := runOptions{
		Client:       &control.Client{BaseURL: g.url},
		Register:     control.RegisterRequest{Name: "web-a", IP: "198.18.0.10", Backend: ready.String()},
		TTL:          ttl,
		Ready:        ready,
		ReadyTimeout: 5 * time.Second,
		CallTimeout:  2 * time.Second,
		Args:         []string{exe},
		Stdout:       io.Discard,
		Stderr:       io.Discard,
		Signals:      sigc,
		Log:          slog.New(slog.NewTextHandler(&syncWriter{w: &logBuf}, nil)),
	}
	if ttl > 0 {
		o.Register.TTL = ttl.String()
	}
	return o, sigc, &logBuf
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestRunExitStatus(t *testing.T) {
	tests := []struct {
		name         string
		ttl          time.Duration
		env          []string
		wantCode     int
		wantRegister int
		minRenew     int
	}{
		{name: "exit 3", env: []string{"HELPER_SLEEP=300ms", "HELPER_EXIT=3"}, wantCode: 3, wantRegister: 1},
		{name: "exit 0", env: []string{"HELPER_SLEEP=300ms"}, wantCode: 0, wantRegister: 1},
		{name: "killed by SIGKILL", env: []string{"HELPER_SLEEP=300ms", "HELPER_KILLSELF=1"}, wantCode: 128 + 9, wantRegister: 1},
		{name: "lease renewed", ttl: 150 * time.Millisecond, env: []string{"HELPER_SLEEP=700ms"}, wantCode: 0, wantRegister: 1, minRenew: 3},
		{name: "exits before ready", env: []string{"HELPER_LISTEN=", "HELPER_SLEEP=50ms", "HELPER_EXIT=5"}, wantCode: 5, wantRegister: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t)
			ready := freePort(t)
			env := append([]string{"HELPER_LISTEN=" + ready.String()}, tc.env...)
			o, _, logBuf := helperOptions(t, g, ready, tc.ttl, env...)
			var seen atomic.Bool
			g.reg.Watch(func(_, next *registry.Table) {
				if _, _, ok := next.Lookup(netip.MustParseAddr("198.18.0.10"), 80); ok {
					seen.Store(true)
				}
			})
			code, err := runServer(context.Background(), o)
			if err != nil {
				t.Fatalf("runServer: %v\nlog:\n%s", err, logBuf)
			}
			if code != tc.wantCode {
				t.Errorf("runServer exit status = %d, want %d\nlog:\n%s", code, tc.wantCode, logBuf)
			}
			if got := g.count(control.PathRegister); got != tc.wantRegister {
				t.Errorf("register calls = %d, want %d", got, tc.wantRegister)
			}
			if got := g.count(control.PathRenew); got < tc.minRenew || (tc.ttl == 0 && got != 0) {
				t.Errorf("renew calls = %d, want at least %d (none without a ttl)", got, tc.minRenew)
			}
			if seen.Load() != (tc.wantRegister > 0) {
				t.Errorf("member seen in the table = %v, want %v", seen.Load(), tc.wantRegister > 0)
			}
			if g.registered("web-a", "198.18.0.10") {
				t.Errorf("after runServer returned, web-a still holds 198.18.0.10; want deregistered")
			}
		})
	}
}

func TestRunForwardsSignal(t *testing.T) {
	g := newGateway(t)
	ready := freePort(t)
	o, sigc, logBuf := helperOptions(t, g, ready, time.Second, "HELPER_LISTEN="+ready.String(), "HELPER_SIGEXIT=42")
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, err := runServer(context.Background(), o)
		res <- result{code, err}
	}()
	waitFor(t, "web-a registered", func() bool { return g.registered("web-a", "198.18.0.10") })
	sigc <- syscall.SIGTERM
	select {
	case r := <-res:
		if r.err != nil || r.code != 42 {
			t.Errorf("runServer after SIGTERM = %d, %v; want 42 (the command's status after the signal), nil\nlog:\n%s", r.code, r.err, logBuf)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("runServer did not return within 10s of SIGTERM\nlog:\n%s", logBuf)
	}
	if g.registered("web-a", "198.18.0.10") {
		t.Errorf("after SIGTERM, web-a still holds 198.18.0.10; want deregistered")
	}
}

func TestRunLeaseLost(t *testing.T) {
	g := newGateway(t)
	ready := freePort(t)
	o, sigc, logBuf := helperOptions(t, g, ready, 300*time.Millisecond, "HELPER_LISTEN="+ready.String())
	res := make(chan int, 1)
	go func() {
		code, _ := runServer(context.Background(), o)
		res <- code
	}()
	waitFor(t, "web-a registered", func() bool { return g.registered("web-a", "198.18.0.10") })
	// Someone removes the lease under vipmux run: its next renewal gets 404
	// and it registers again.
	if err := g.reg.Deregister("web-a", registry.Key{IP: netip.MustParseAddr("198.18.0.10")}); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	waitFor(t, "web-a registered again", func() bool { return g.registered("web-a", "198.18.0.10") })
	if got := g.count(control.PathRegister); got != 2 {
		t.Errorf("register calls = %d, want 2 (start, then after the lease was lost)", got)
	}
	if !strings.Contains(logBuf.String(), "lease lost") {
		t.Errorf("log does not say the lease was lost:\n%s", logBuf)
	}
	sigc <- syscall.SIGTERM
	select {
	case <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("runServer did not return within 10s of SIGTERM")
	}
}

func TestRunReadyTimeout(t *testing.T) {
	g := newGateway(t)
	ready := freePort(t)
	o, _, _ := helperOptions(t, g, ready, 0) // the helper never listens
	o.ReadyTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err := runServer(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "within 300ms") || !strings.Contains(err.Error(), ready.String()) {
		t.Errorf("runServer with a command that never listens = %v, want an error naming %s and the 300ms timeout", err, ready)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("runServer took %v, want the command killed soon after 300ms", d)
	}
	if got := g.count(control.PathRegister); got != 0 {
		t.Errorf("register calls = %d, want 0", got)
	}
}

func TestRunRegisterRefused(t *testing.T) {
	g := newGateway(t)
	if _, err := g.reg.Register(registry.Registration{Name: "other", IP: netip.MustParseAddr("198.18.0.10"), Backend: netip.MustParseAddrPort("127.0.0.1:1")}); err != nil {
		t.Fatal(err)
	}
	ready := freePort(t)
	o, _, _ := helperOptions(t, g, ready, 0, "HELPER_LISTEN="+ready.String())
	start := time.Now()
	_, err := runServer(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("runServer on an IP held by another server = %v, want a 409 error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("runServer took %v, want the command killed at once", d)
	}
}

func TestRunFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no command", []string{"--name", "a", "--ip", "198.18.0.10", "--backend", "127.0.0.1:80"}, "no command given"},
		{"no port to probe", []string{"--name", "a", "--ip", "198.18.0.10", "--backend", "127.0.0.1", "--", "true"}, "--ready-port"},
		{"bad backend", []string{"--name", "a", "--ip", "198.18.0.10", "--backend", "host:80", "--", "true"}, "--backend"},
		{"negative ttl", []string{"--name", "a", "--ip", "198.18.0.10", "--backend", "127.0.0.1:80", "--ttl", "-1s", "--", "true"}, "--ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := newApp()
			app.Writer, app.ErrWriter = io.Discard, io.Discard
			err := app.Run(append([]string{"vipmux", "run", "--gateway", "http://127.0.0.1:1"}, tc.args...))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("vipmux run %s = %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.wantErr)
			}
		})
	}
}

func TestRunRenewFailureRetried(t *testing.T) {
	g := newGateway(t)
	g.failRenews = 1
	ready := freePort(t)
	o, _, logBuf := helperOptions(t, g, ready, 600*time.Millisecond, "HELPER_LISTEN="+ready.String(), "HELPER_SLEEP=1500ms")
	code, err := runServer(context.Background(), o)
	if err != nil || code != 0 {
		t.Fatalf("runServer = %d, %v; want 0, nil\nlog:\n%s", code, err, logBuf)
	}
	if !strings.Contains(logBuf.String(), "renew failed; retrying") {
		t.Errorf("log does not report the failed renewal:\n%s", logBuf)
	}
	if got := g.count(control.PathRegister); got != 1 {
		t.Errorf("register calls = %d, want 1: one failed renewal must not lose the lease", got)
	}
	if got := g.count(control.PathRenew); got < 4 {
		t.Errorf("renew calls = %d, want at least 4 in 1.5s at TTL/3 = 200ms", got)
	}
	if got := g.count(control.PathDeregister); got != 1 {
		t.Errorf("deregister calls = %d, want 1", got)
	}
}

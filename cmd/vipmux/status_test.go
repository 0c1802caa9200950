package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/registry"
)

func TestPrintBindingsHealth(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bs := []control.BindingView{
		{IP: "198.18.0.100", Port: 8080, Members: []control.MemberView{
			{Name: "web-a", Backend: "198.19.0.2:8080", State: "standby", Since: now, Down: true, Reason: "health check failed: connection refused"},
			{Name: "web-b", Backend: "198.19.0.3:8080", State: "active", Since: now, Reason: "automatic failover: web-a health check failed: connection refused", ProxyProtocol: "v2"},
		}},
		{IP: "198.18.0.100", Port: 9090, Members: []control.MemberView{
			{Name: "web-a", Backend: "198.19.0.2:9090", State: "active", Since: now, Down: true, Reason: "health check failed: i/o timeout"},
		}},
	}
	var buf bytes.Buffer
	if err := printBindings(&buf, bs); err != nil {
		t.Fatalf("printBindings: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for i, want := range [][]string{
		{"IP", "PORT", "SERVER", "BACKEND", "PROXY", "STATE", "HEALTH", "CONNS", "SINCE", "REASON"},
		{"web-a", " none ", "standby", "down", "health check failed: connection refused"},
		{"web-b", " v2 ", "active", "up", "automatic failover: web-a"},
		{"9090", "web-a", " none ", "active", "down"},
		{"198.18.0.100:9090 has no healthy server", "web-a is down"},
	} {
		if i >= len(lines) {
			t.Fatalf("printBindings printed %d lines, want at least %d:\n%s", len(lines), i+1, buf.String())
		}
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("printBindings line %d = %q, want it to contain %q", i, lines[i], w)
			}
		}
	}
}

func TestPrintEvents(t *testing.T) {
	var es []control.EventView
	for i := range 15 {
		es = append(es, control.EventView{Time: time.Unix(int64(i), 0), Binding: "198.18.0.100:8080", Member: "web-" + string(rune('a'+i)), What: "down", Why: "health check failed"})
	}
	var buf bytes.Buffer
	if err := printEvents(&buf, es, 10); err != nil {
		t.Fatalf("printEvents: %v", err)
	}
	out := buf.String()
	if !strings.Contains(out, "recent automatic changes (last 10)") || strings.Contains(out, "web-e ") || !strings.Contains(out, "web-f ") || !strings.Contains(out, "web-o ") {
		t.Errorf("printEvents(15 events, 10) =\n%s\nwant a heading and the last 10 (web-f..web-o)", out)
	}
	buf.Reset()
	if err := printEvents(&buf, nil, 10); err != nil || buf.Len() != 0 {
		t.Errorf("printEvents(none) = %q, %v; want nothing", buf.String(), err)
	}
}

func TestLease(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		m    control.MemberView
		want string
	}{
		{"permanent", control.MemberView{}, "-"},
		{"running", control.MemberView{TTL: "10s", Expires: now.Add(7230 * time.Millisecond)}, "10s, 7.2s left"},
		{"ran out", control.MemberView{TTL: "2s", Expires: now.Add(-time.Second)}, "2s, expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := lease(tc.m, now); got != tc.want {
				t.Errorf("lease(%+v) = %q, want %q", tc.m, got, tc.want)
			}
		})
	}
}

// statusGateway returns the URL of a control API over a registry holding
// a leased mode-1 member.
func statusGateway(t *testing.T) string {
	t.Helper()
	g := newGateway(t)
	if _, err := g.reg.Register(registry.Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.0.10"), Backend: netip.MustParseAddrPort("198.19.0.2:80"), TTL: time.Hour}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	return g.url
}

// runAppContext runs vipmux with args until it returns or ctx is done and
// returns its error and what it printed.
func runAppContext(ctx context.Context, args ...string) (*syncBuffer, error) {
	var out, errOut syncBuffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(ctx, append([]string{"vipmux"}, args...))
	return &out, err
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestStatusFlags(t *testing.T) {
	url := statusGateway(t)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"interval without watch", []string{"--interval", "2s"}, "--interval: only with --watch"},
		{"interval too short", []string{"--watch", "--interval", "10ms"}, "--interval 10ms: must be at least 100ms"},
		{"interval negative", []string{"--watch", "--interval", "-1s"}, "--interval -1s"},
		{"argument", []string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := runAppContext(ctx, append([]string{"status", "--gateway", url}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("status %v = %v (printed %q), want an error containing %q", tc.args, err, out.String(), tc.wantErr)
			}
		})
	}
}

// TestStatusWatch runs status --watch (table and JSON Lines) until it has
// refreshed a few times, then interrupts it as Ctrl-C would.
func TestStatusWatch(t *testing.T) {
	url := statusGateway(t)
	tests := []struct {
		name string
		args []string
		// frames counts the refreshes in the output so far.
		frames func(t *testing.T, out string) int
	}{
		{"table", nil, func(t *testing.T, out string) int {
			if strings.Contains(out, "\x1b[") {
				t.Fatalf("status --watch to a pipe printed terminal escapes: %q", out)
			}
			n := strings.Count(out, "IP  ")
			if n > 0 && (!strings.Contains(out, "LEASE") || !strings.Contains(out, "1h0m0s, ") || !strings.Contains(out, "web-a")) {
				t.Fatalf("status --watch printed %q, want the table with web-a and its lease", out)
			}
			return n
		}},
		{"json", []string{"--json"}, func(t *testing.T, out string) int {
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			n := 0
			for _, l := range lines[:len(lines)-1] { // the last may be partial
				var s control.Status
				if err := json.Unmarshal([]byte(l), &s); err != nil {
					t.Fatalf("status --watch --json line %q: %v", l, err)
				}
				if len(s.Bindings) != 1 || s.Bindings[0].Members[0].Name != "web-a" {
					t.Fatalf("status --watch --json line %q: want the binding of web-a", l)
				}
				n++
			}
			return n
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var (
				out  *syncBuffer
				errc = make(chan error, 1)
				outc = make(chan *syncBuffer, 1)
			)
			go func() {
				var o, e syncBuffer
				outc <- &o
				app := newApp()
				app.Writer, app.ErrWriter = &o, &e
				errc <- app.RunContext(ctx, append([]string{"vipmux", "status", "--watch", "--interval", "100ms", "--gateway", url}, tc.args...))
			}()
			out = <-outc
			waitFor(t, "three refreshes", func() bool { return tc.frames(t, out.String()) >= 3 })
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("status --watch after interrupt = %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("status --watch did not return within 5s of the interrupt")
			}
		})
	}
}

func TestRedraw(t *testing.T) {
	var buf bytes.Buffer
	w := &statusWatcher{out: &buf, tty: true}
	if err := w.redraw([]byte("a\nb\n"), true); err != nil {
		t.Fatalf("redraw: %v", err)
	}
	if got, want := buf.String(), "\x1b[2J\x1b[Ha\x1b[K\nb\x1b[K\n\x1b[J"; got != want {
		t.Errorf("first redraw = %q, want %q", got, want)
	}
	buf.Reset()
	w.redraw([]byte("c\n"), false)
	if got, want := buf.String(), "\x1b[Hc\x1b[K\n\x1b[J"; got != want {
		t.Errorf("later redraw = %q, want %q", got, want)
	}
}

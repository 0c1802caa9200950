package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
)

// lockedBuffer is a bytes.Buffer for a logger that several goroutines use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestLogSwitch(t *testing.T) {
	var out lockedBuffer
	ls := newLogSwitch(config.Log{Level: "info", Format: "text"}, &out)
	derived := ls.Logger.With("component", "x").WithGroup("g")

	ls.Logger.Debug("hidden")
	derived.Info("one", "k", 1)
	ls.Set(config.Log{Level: "debug", Format: "json"})
	ls.Logger.Debug("shown")
	derived.Info("two", "k", 2)
	ls.Set(config.Log{Level: "warn", Format: "text"})
	derived.Info("hidden too")
	derived.Warn("three", "k", 3)

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var got []string
	for _, l := range lines {
		// Drop the time, which differs on every run.
		if i := strings.Index(l, "level"); i >= 0 {
			l = l[i:]
		}
		got = append(got, l)
	}
	want := []string{
		`level=INFO msg=one component=x g.k=1`,
		`level":"DEBUG","msg":"shown"}`,
		`level":"INFO","msg":"two","component":"x","g":{"k":2}}`,
		`level=WARN msg=three component=x g.k=3`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
}

// testGateway is the part of a gateway that a reload changes: a registry,
// a stack on a fake wire, a forwarder and a health checker, with a config
// file.
type testGateway struct {
	path string
	reg  *registry.Registry
	st   *stack.Stack
	fwd  *dispatch.Forwarder
	r    *reloader
	log  *lockedBuffer
}

const baseConfig = `
[nic]
driver = "afpacket"
interface = "f0"
networks = ["198.18.0.0/24"]
[arp]
dad_probes = 0
`

func newTestGateway(t *testing.T) *testGateway {
	t.Helper()
	g := &testGateway{path: filepath.Join(t.TempDir(), "vipmux.toml"), log: &lockedBuffer{}}
	g.write(t, "")
	cfg, err := config.Load(g.path)
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogSwitch(cfg.Log, g.log)
	g.reg, err = registry.New(registry.Options{Networks: cfg.NIC.Networks})
	if err != nil {
		t.Fatal(err)
	}
	wire := channel.New(256, 1500, "\x02\x00\x00\x00\x00\x01")
	g.st, err = stack.New(stack.Options{Link: ethernet.New(wire), Networks: cfg.NIC.Networks, Static: []netip.Addr{cfg.Shared.Address}, Logger: logs.Logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.st.Close(); wire.Drain() })
	if err := g.reg.SetApplier(g.st); err != nil {
		t.Fatal(err)
	}
	g.fwd = dispatch.New(dispatch.Options{Table: g.reg, Logger: logs.Logger})
	t.Cleanup(g.fwd.Close)
	hc, err := newHealthChecker(cfg.Health, g.reg, logs.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hr := &healthRunner{ctx: ctx, hc: hc}
	hr.start()
	t.Cleanup(func() { cancel(); hr.stop() })
	g.r = newReloader(g.path, func(*config.Config) {}, cfg, logs, g.reg, g.st, g.fwd, hr)
	return g
}

// write writes the config file: baseConfig, extra, and shared address
// 198.18.0.100 unless extra has a [shared] table.
func (g *testGateway) write(t *testing.T, extra string) {
	t.Helper()
	if !strings.Contains(extra, "[shared]") {
		extra += "\n[shared]\naddress = \"198.18.0.100\"\n"
	}
	if err := os.WriteFile(g.path, []byte(baseConfig+extra), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReloader(t *testing.T) {
	g := newTestGateway(t)
	a100, a101 := netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("198.18.0.101")
	reload := func(extra string) ([]string, error) {
		t.Helper()
		g.write(t, extra)
		return g.r.Reload(context.Background())
	}

	if changed, err := reload(""); err != nil || len(changed) != 0 {
		t.Errorf("Reload(unchanged) = %v, %v; want nothing, nil", changed, err)
	}

	// A bad file, and a fixed key next to a reloadable one: refused, with
	// the field and kind the API maps; nothing changes.
	for _, tc := range []struct {
		extra     string
		wantKind  error
		wantField string
	}{
		{"[health]\nrise = 0\n[log]\nlevel = \"debug\"\n", registry.ErrInvalid, "health.rise"},
		{"[dispatch]\nmax_in_flight = 1\n[log]\nlevel = \"debug\"\n", registry.ErrConflict, "dispatch.max_in_flight"},
		{"[log\n", registry.ErrInvalid, "config"},
	} {
		_, err := reload(tc.extra)
		var fe *registry.FieldError
		if !errors.As(err, &fe) || !errors.Is(err, tc.wantKind) || fe.Field != tc.wantField {
			t.Errorf("Reload(%q) = %v, want a %v naming %s", tc.extra, err, tc.wantKind, tc.wantField)
		}
	}
	if g.r.logs.level.Level() != slog.LevelInfo {
		t.Errorf("log level after refused reloads = %v, want INFO", g.r.logs.level.Level())
	}

	// The shared address moves only while nobody is registered on it.
	if _, err := g.reg.Register(registry.Registration{Name: "web-a", IP: a100, Port: 80, Backend: netip.MustParseAddrPort("198.19.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	_, err := reload("[log]\nlevel = \"debug\"\n[shared]\naddress = \"198.18.0.101\"\n")
	if !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "198.18.0.100:80") {
		t.Errorf("Reload(move the shared address with a binding on it) = %v, want a conflict naming 198.18.0.100:80", err)
	}
	if g.r.Shared() != a100 || g.r.logs.level.Level() != slog.LevelInfo {
		t.Errorf("after the refused move: shared %v, level %v; want %v, INFO (nothing applied)", g.r.Shared(), g.r.logs.level.Level(), a100)
	}
	if err := g.reg.Deregister("web-a", registry.Key{IP: a100, Port: 80}); err != nil {
		t.Fatal(err)
	}
	changed, err := reload("[log]\nlevel = \"debug\"\n[shared]\naddress = \"198.18.0.101\"\n[dispatch]\ndial_timeout = \"1s\"\n[health]\nfailback = true\n")
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if diff := cmp.Diff([]string{"dispatch.dial_timeout", "health.failback", "log.level", "shared.address"}, changed); diff != "" {
		t.Errorf("Reload changed (-want +got):\n%s", diff)
	}
	if g.r.Shared() != a101 {
		t.Errorf("Shared() = %v, want %v", g.r.Shared(), a101)
	}
	if diff := cmp.Diff([]netip.Addr{a101}, g.st.Addrs(), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("stack addresses after the move (-want +got):\n%s", diff)
	}
	if g.r.logs.level.Level() != slog.LevelDebug {
		t.Errorf("log level = %v, want DEBUG", g.r.logs.level.Level())
	}
	if d := g.fwd.DialTimeout(); d != time.Second {
		t.Errorf("forwarder's dial timeout = %v, want 1s", d)
	}
	log := g.log.String()
	for _, want := range []string{
		`msg="reload refused: the configuration in force stays as it was"`,
		`err="config ` + g.path + `: health.rise: 0 is out of range: use 1..100"`,
		fmt.Sprintf(`msg="config reloaded" config=%s by=api changed="dispatch.dial_timeout: \"3s\" -> \"1s\"; health.failback: false -> true; log.level: \"info\" -> \"debug\"; shared.address: 198.18.0.100 -> 198.18.0.101"`, g.path),
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}

package notify_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vipmux/vipmux/notify"
	"github.com/vipmux/vipmux/registry"
)

var (
	vip    = netip.MustParseAddr("198.18.0.10")
	shared = netip.MustParseAddr("198.18.0.100")
	be     = netip.MustParseAddrPort("198.19.0.2:80")
	k1     = registry.Key{IP: vip}
	k80    = registry.Key{IP: shared, Port: 80}
)

// TestEvents drives a real registry through each kind of change and
// checks the events that the published tables give.
func TestEvents(t *testing.T) {
	tests := []struct {
		name     string
		failback bool
		change   func(t *testing.T, r *registry.Registry, clock *time.Time)
		want     []notify.Event
	}{
		{"switch", false, func(t *testing.T, r *registry.Registry, _ *time.Time) {
			must(t)(r.Switch(k80, "b"))
		}, []notify.Event{{Kind: notify.Switch, Binding: "198.18.0.100:80", Member: "b", From: "a"}}},
		{"health down of the active: failover", false, func(t *testing.T, r *registry.Registry, _ *time.Time) {
			mustErr(t, r.SetHealth(k80, "a", false, "refused"))
		}, []notify.Event{
			{Kind: notify.Failover, Binding: "198.18.0.100:80", Member: "b", From: "a"},
			{Kind: notify.HealthDown, Binding: "198.18.0.100:80", Member: "a"},
		}},
		{"health down and up again of a standby", false, func(t *testing.T, r *registry.Registry, _ *time.Time) {
			mustErr(t, r.SetHealth(k80, "b", false, "refused"))
			mustErr(t, r.SetHealth(k80, "b", true, "ok"))
		}, []notify.Event{
			{Kind: notify.HealthDown, Binding: "198.18.0.100:80", Member: "b"},
			{Kind: notify.HealthUp, Binding: "198.18.0.100:80", Member: "b"},
		}},
		{"failback", true, func(t *testing.T, r *registry.Registry, _ *time.Time) {
			mustErr(t, r.SetHealth(k80, "a", false, "refused"))
			mustErr(t, r.SetHealth(k80, "a", true, "ok"))
		}, []notify.Event{
			{Kind: notify.Failover, Binding: "198.18.0.100:80", Member: "b", From: "a"},
			{Kind: notify.HealthDown, Binding: "198.18.0.100:80", Member: "a"},
			{Kind: notify.Failback, Binding: "198.18.0.100:80", Member: "a", From: "b"},
			{Kind: notify.HealthUp, Binding: "198.18.0.100:80", Member: "a"},
		}},
		{"leases run out: mode 2 down, mode 1 released", false, func(t *testing.T, r *registry.Registry, clock *time.Time) {
			*clock = clock.Add(time.Hour)
			r.Expire()
		}, []notify.Event{
			{Kind: notify.LeaseExpired, Binding: "198.18.0.100:80", Member: "b"},
			{Kind: notify.LeaseExpired, Binding: "198.18.0.10:*", Member: "m1"},
		}},
		{"registration and deregistration are no events", false, func(t *testing.T, r *registry.Registry, _ *time.Time) {
			must(t)(r.Register(registry.Registration{Name: "c", IP: shared, Port: 81, Backend: be}))
			mustErr(t, r.Deregister("m1", k1))
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			r, err := registry.New(registry.Options{Failback: tc.failback, Now: func() time.Time { return clock }})
			if err != nil {
				t.Fatal(err)
			}
			for _, reg := range []registry.Registration{
				{Name: "m1", IP: vip, Backend: be, TTL: time.Minute},
				{Name: "a", IP: shared, Port: 80, Backend: be, State: registry.Active},
				{Name: "b", IP: shared, Port: 80, Backend: be, State: registry.Standby, TTL: time.Minute},
			} {
				must(t)(r.Register(reg))
			}
			var got []notify.Event
			r.Watch(func(prev, next *registry.Table) { got = append(got, notify.Events(prev, next, clock)...) })
			tc.change(t, r, &clock)
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(notify.Event{}, "Time", "Why")); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func must(t *testing.T) func(registry.Binding, error) {
	return func(_ registry.Binding, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func mustErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeliver sends events to a command and a webhook and checks what
// each received, then the failures: a command that fails, one that
// outlives the timeout, a webhook that answers 500.
func TestDeliver(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := filepath.Join(dir, "notify.sh")
	// The command appends its environment's event and its stdin.
	writeScript(t, script, `#!/bin/sh
{ printf '%s %s %s %s|' "$VIPMUX_EVENT" "$VIPMUX_BINDING" "$VIPMUX_MEMBER" "$VIPMUX_FROM"; cat; } >> `+out+"\n")
	var mu sync.Mutex
	var posted []notify.Event
	status := http.StatusNoContent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e notify.Event
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &e) != nil {
			t.Errorf("webhook got %s %q %q", r.Method, r.Header.Get("Content-Type"), body)
		}
		mu.Lock()
		posted = append(posted, e)
		code := status
		mu.Unlock()
		w.WriteHeader(code)
	}))
	defer srv.Close()

	n := notify.New(notify.Settings{Exec: script, Webhook: srv.URL, Timeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	ctx := t.Context()
	go n.Run(ctx)
	e := notify.Event{Kind: notify.Failover, Binding: "198.18.0.100:80", Member: "b", From: "a", Why: "refused"}
	n.Send(e)
	n.Flush()
	got, _ := os.ReadFile(out)
	line, js, _ := strings.Cut(string(got), "|")
	if line != "failover 198.18.0.100:80 b a" {
		t.Errorf("command's environment = %q, want %q", line, "failover 198.18.0.100:80 b a")
	}
	var fromStdin notify.Event
	if err := json.Unmarshal([]byte(js), &fromStdin); err != nil || fromStdin.Kind != notify.Failover || fromStdin.Time.IsZero() {
		t.Errorf("command's stdin = %q (%v), want the event as JSON with its time", js, err)
	}
	mu.Lock()
	if len(posted) != 1 || posted[0].Member != "b" || posted[0].From != "a" {
		t.Errorf("webhook got %+v, want the one failover", posted)
	}
	status = http.StatusInternalServerError
	mu.Unlock()
	if sent, failed, dropped := n.Stats(); sent != 2 || failed != 0 || dropped != 0 {
		t.Errorf("Stats = %d sent, %d failed, %d dropped; want 2, 0, 0", sent, failed, dropped)
	}

	// Failures: exit 1, a command that sleeps past the timeout, a 500.
	writeScript(t, script, "#!/bin/sh\necho broken >&2\nexit 1\n")
	n.Send(e)
	n.Flush()
	slow := filepath.Join(dir, "slow.sh")
	writeScript(t, slow, "#!/bin/sh\nexec sleep 30\n")
	n.Set(notify.Settings{Exec: slow, Timeout: 200 * time.Millisecond})
	start := time.Now()
	n.Send(e)
	n.Flush()
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("a command past its timeout held delivery for %v", took)
	}
	if sent, failed, _ := n.Stats(); sent != 2 || failed != 3 {
		t.Errorf("after the failures: Stats = %d sent, %d failed; want 2 sent, 3 failed (exit 1, 500, timeout)", sent, failed)
	}
}

// TestNowhere: without a command or a webhook, Send does nothing (and
// needs no Run).
func TestNowhere(t *testing.T) {
	n := notify.New(notify.Settings{}, slog.New(slog.DiscardHandler))
	n.Send(notify.Event{Kind: notify.Reload})
	n.Flush()
	if sent, failed, dropped := n.Stats(); sent+failed+dropped != 0 {
		t.Errorf("Stats = %d, %d, %d; want nothing", sent, failed, dropped)
	}
}

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // no ETXTBSY from a script being replaced
		t.Fatal(err)
	}
}

package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// TestEverySeriesDocumented checks that every vipmux_* series that a
// gateway with every collector registers is in docs/metrics.md, and that
// the docs' tables name no series that does not exist.
func TestEverySeriesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatalf("read docs/metrics.md: %v", err)
	}
	r := newRegistry(t,
		registry.Registration{Name: "web-a", IP: vip, Backend: be},
		registry.Registration{Name: "web-a", IP: shared, Port: 8080, Backend: be})
	rec := NewRecorder()
	rec.ObserveDial(time.Millisecond)
	rec.ObserveProbe(time.Millisecond)
	rec.ObserveSave(time.Millisecond)
	m, err := New(Options{
		Table: r,
		Conns: fakeConns{
			stats(registry.Key{IP: vip}, "web-a", map[dispatch.Outcome]uint64{dispatch.Proxied: 1}, 0, 1, 1),
			stats(registry.Key{IP: shared, Port: 8080}, "web-a", map[dispatch.Outcome]uint64{dispatch.Proxied: 1}, 0, 1, 1),
			stats(registry.Key{IP: shared, Port: 8080}, "", map[dispatch.Outcome]uint64{dispatch.NoRoute: 1}, 0, 0, 0),
		},
		Stack:         &dadStack{fakeStack: fakeStack{s: tcpip.Stats{}.FillIn()}},
		Recorder:      rec,
		Notifications: func() (uint64, uint64, uint64) { return 3, 1, 0 },
		Logger:        discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "vipmux_") {
			continue
		}
		registered[name] = true
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/metrics.md does not list %s", name)
		}
	}
	if len(registered) < 30 {
		t.Errorf("the scrape has %d vipmux_* series names; want every collector's (30 or more)", len(registered))
	}
	// Every name in the tables above "Renamed series" exists.
	current, _, _ := strings.Cut(string(doc), "## Renamed series")
	for _, name := range regexp.MustCompile("`(vipmux_[a-z0-9_]+)`").FindAllStringSubmatch(current, -1) {
		if !registered[name[1]] {
			t.Errorf("docs/metrics.md lists %s, which no collector registers", name[1])
		}
	}
}

// TestNotificationCounters: the [notify] counters read the notifier at
// scrape time.
func TestNotificationCounters(t *testing.T) {
	r, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sent, failed, dropped uint64 = 5, 2, 1
	m, err := New(Options{Table: r, Notifications: func() (uint64, uint64, uint64) { return sent, failed, dropped }, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	sent++
	want := `
# HELP vipmux_notifications_dropped_total [notify] events dropped because 256 were waiting already.
# TYPE vipmux_notifications_dropped_total counter
vipmux_notifications_dropped_total 1
# HELP vipmux_notifications_failed_total [notify] deliveries that failed: a command that exited non-zero or ran past [notify] timeout, a webhook that answered other than 2xx or not in time.
# TYPE vipmux_notifications_failed_total counter
vipmux_notifications_failed_total 2
# HELP vipmux_notifications_sent_total [notify] deliveries (a command run, a webhook POSTed) that succeeded.
# TYPE vipmux_notifications_sent_total counter
vipmux_notifications_sent_total 6
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "vipmux_notifications_sent_total", "vipmux_notifications_failed_total", "vipmux_notifications_dropped_total"); err != nil {
		t.Error(err)
	}
}

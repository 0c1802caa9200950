package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

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
		Stack:    &dadStack{fakeStack: fakeStack{s: tcpip.Stats{}.FillIn()}},
		Recorder: rec,
		Logger:   discard,
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

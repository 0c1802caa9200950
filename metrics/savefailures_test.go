package metrics

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vipmux/vipmux/registry"
)

// failingStore is a registry.Store whose saves fail.
type failingStore struct{}

func (failingStore) Load() (*registry.Table, error) { return nil, nil }
func (failingStore) Save(*registry.Table) error     { return errors.New("no space left on device") }

// TestSaveFailures (issue 12 point 8): each failed save of the table is
// counted in vipmux_state_save_failures_total.
func TestSaveFailures(t *testing.T) {
	reg, err := registry.New(registry.Options{Store: failingStore{}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Table: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := reg.Register(registry.Registration{Name: "a", IP: netip.MustParseAddr("198.18.0.10"), Backend: netip.MustParseAddrPort("198.19.0.2:0")}); err == nil {
			t.Fatal("Register on a failing store: nil error")
		}
	}
	want := "# HELP vipmux_state_save_failures_total Saves of the table to the state file that failed (full disk, I/O error, read-only file system); automatic changes stand in memory and are saved again.\n# TYPE vipmux_state_save_failures_total counter\nvipmux_state_save_failures_total 2\n"
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "vipmux_state_save_failures_total"); err != nil {
		t.Error(err)
	}
}

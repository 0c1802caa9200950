package registry

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestEarlyRouting: while a switch is being saved, Lookup already routes by
// it, but Table, the watchers and the events wait until it is durable; a
// save that fails undoes it everywhere and reports nothing. A change that
// adds or removes a member is never routed before it is durable, not even
// when a switch queued behind it is.
func TestEarlyRouting(t *testing.T) {
	errDisk := errors.New("disk full")
	shared := netip.MustParseAddr("198.18.0.100")
	k := Key{IP: shared, Port: 80}
	setup := func(t *testing.T) (*Registry, *gateStore, *[]string) {
		st := &gateStore{entered: make(chan *Table), release: make(chan error)}
		r, err := New(Options{Networks: front, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		for _, reg := range []Registration{
			{Name: "web-a", IP: shared, Port: 80, Backend: beA, State: Active},
			{Name: "web-b", IP: shared, Port: 80, Backend: beA, State: Standby},
		} {
			done := make(chan error, 1)
			go func() { _, err := r.Register(reg); done <- err }()
			<-st.entered
			st.release <- nil
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		var mu sync.Mutex
		var seen []string
		r.Watch(func(prev, next *Table) {
			b, _ := next.Binding(k)
			a, _ := b.Active()
			mu.Lock()
			seen = append(seen, a.Name)
			mu.Unlock()
		})
		return r, st, &seen
	}
	active := func(r *Registry) (routed, shown string) {
		m, _, _ := r.Lookup(shared, 80)
		b, _ := r.Table().Binding(k)
		a, _ := b.Active()
		return m.Name, a.Name
	}

	for _, tc := range []struct {
		name       string
		saveErr    error
		wantRouted string
		wantShown  string
		wantSeen   int
	}{
		{"save succeeds", nil, "web-b", "web-b", 1},
		{"save fails", errDisk, "web-a", "web-a", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, st, seen := setup(t)
			done := make(chan error, 1)
			go func() { _, err := r.Switch(k, "web-b"); done <- err }()
			<-st.entered
			if routed, shown := active(r); routed != "web-b" || shown != "web-a" {
				t.Errorf("while the switch is being saved: Lookup routes to %s, Table shows %s; want web-b and web-a", routed, shown)
			}
			if len(*seen) != 0 || len(r.Events()) != 0 {
				t.Errorf("while the switch is being saved: watchers saw %v, events %v; want nothing yet", *seen, r.Events())
			}
			select {
			case err := <-done:
				t.Fatalf("Switch() returned %v before its save finished", err)
			case <-time.After(10 * time.Millisecond):
			}
			st.release <- tc.saveErr
			if err := <-done; !errors.Is(err, tc.saveErr) {
				t.Fatalf("Switch() = %v, want %v", err, tc.saveErr)
			}
			if routed, shown := active(r); routed != tc.wantRouted || shown != tc.wantShown {
				t.Errorf("after the save: Lookup routes to %s, Table shows %s; want %s and %s", routed, shown, tc.wantRouted, tc.wantShown)
			}
			if len(*seen) != tc.wantSeen || len(r.Events()) != 0 {
				t.Errorf("after the save: watchers saw %v, events %v; want %d calls and no event", *seen, r.Events(), tc.wantSeen)
			}
		})
	}

	t.Run("a new member waits for the disk, and so does a switch behind it", func(t *testing.T) {
		r, st, _ := setup(t)
		ipC := netip.MustParseAddr("198.18.0.12")
		regDone := make(chan error, 1)
		go func() { _, err := r.Register(Registration{Name: "web-c", IP: ipC, Backend: beA}); regDone <- err }()
		<-st.entered // the registration's save is held
		if _, _, ok := r.Lookup(ipC, 80); ok {
			t.Error("Lookup routes to a member whose registration is not durable")
		}
		swDone := make(chan error, 1)
		go func() { _, err := r.Switch(k, "web-b"); swDone <- err }()
		// The switch waits behind the held save, in a batch whose table
		// also holds the registration: it must not be routed early.
		deadline := time.Now().Add(5 * time.Second)
		for {
			r.mu.Lock()
			queued := r.open != nil
			r.mu.Unlock()
			if queued || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if m, _, _ := r.Lookup(shared, 80); m.Name != "web-a" {
			t.Errorf("a switch queued behind a registration is routed (%s) before the registration is durable", m.Name)
		}
		if _, _, ok := r.Lookup(ipC, 80); ok {
			t.Error("Lookup routes to web-c before its registration is durable")
		}
		st.release <- nil
		if err := <-regDone; err != nil {
			t.Fatal(err)
		}
		<-st.entered // the switch's batch
		st.release <- nil
		if err := <-swDone; err != nil {
			t.Fatal(err)
		}
		if m, _, _ := r.Lookup(shared, 80); m.Name != "web-b" {
			t.Errorf("after both saves, Lookup routes to %s, want web-b", m.Name)
		}
		if m, _, ok := r.Lookup(ipC, 80); !ok || m.Name != "web-c" {
			t.Errorf("after both saves, Lookup(%s) = %s, %v; want web-c", ipC, m.Name, ok)
		}
	})
}

package registry

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// gateStore is a Store whose saves wait for the test: each Save reports on
// entered, then blocks until the test sends the save's result on release.
type gateStore struct {
	entered chan *Table
	release chan error

	mu    sync.Mutex
	saved *Table
	saves int
}

func (s *gateStore) Load() (*Table, error) { return nil, nil }

func (s *gateStore) Save(t *Table) error {
	s.entered <- t
	err := <-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	if err == nil {
		s.saved = t
	}
	return err
}

// heldApplier keeps the set of addresses that Prepare and Commit leave
// held, as the stack does: Prepare adds next's addresses that prev does not
// hold, Commit removes prev's that next does not hold.
type heldApplier struct {
	mu   sync.Mutex
	held map[netip.Addr]bool
}

func (a *heldApplier) Prepare(prev, next *Table) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ip := range next.Addrs() {
		if !prev.Holds(ip) {
			if a.held[ip] {
				return fmt.Errorf("prepare %s: held already", ip)
			}
			a.held[ip] = true
		}
	}
	return nil
}

func (a *heldApplier) Commit(prev, next *Table) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ip := range prev.Addrs() {
		if !next.Holds(ip) {
			delete(a.held, ip)
		}
	}
}

func (a *heldApplier) addrs() map[netip.Addr]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.held)
}

// TestGroupCommit holds the first save while more changes arrive: they
// must wait, be saved together by one later save, and be published only
// once durable. A failed save fails its batch and the batch waiting behind
// it, and releases what they took.
func TestGroupCommit(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("save fails=%v", fail), func(t *testing.T) {
			st := &gateStore{entered: make(chan *Table), release: make(chan error)}
			r, err := New(Options{Networks: front, Store: st})
			if err != nil {
				t.Fatalf("New() error: %v", err)
			}
			ap := &heldApplier{held: map[netip.Addr]bool{}}
			if err := r.SetApplier(ap); err != nil {
				t.Fatalf("SetApplier() error: %v", err)
			}
			ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}) }
			register := func(i int, errc chan<- error) {
				_, err := r.Register(Registration{Name: fmt.Sprintf("s%d", i), IP: ip(i), Backend: beA})
				errc <- err
			}

			// The first change starts a save and holds it.
			first := make(chan error, 1)
			go register(0, first)
			<-st.entered
			// Five more arrive while it runs; they wait in one batch.
			const waiting = 5
			rest := make(chan error, waiting)
			for i := 1; i <= waiting; i++ {
				go register(i, rest)
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(ap.addrs()) < 1+waiting && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := len(ap.addrs()); got != 1+waiting {
				t.Fatalf("held %d addresses while the first save runs, want %d (all prepared)", got, 1+waiting)
			}
			if n := r.Table().Len(); n != 0 {
				t.Fatalf("published %d bindings before any save finished, want 0", n)
			}

			var saveErr error
			if fail {
				saveErr = errors.New("disk full")
			}
			st.release <- saveErr
			if err := <-first; (err != nil) != fail {
				t.Fatalf("first Register() = %v, want error %v", err, fail)
			}
			if !fail {
				// The waiting batch is saved next, in one save.
				saved := <-st.entered
				if saved.Len() != 1+waiting {
					t.Errorf("second save has %d bindings, want %d", saved.Len(), 1+waiting)
				}
				st.release <- nil
			}
			for range waiting {
				if err := <-rest; (err != nil) != fail {
					t.Errorf("waiting Register() = %v, want error %v", err, fail)
				}
			}
			want := 1 + waiting
			if fail {
				want = 0
			}
			if n := r.Table().Len(); n != want {
				t.Errorf("published %d bindings, want %d", n, want)
			}
			if held := ap.addrs(); len(held) != want {
				t.Errorf("applier holds %v, want %d addresses", held, want)
			}
			st.mu.Lock()
			saves := st.saves
			st.mu.Unlock()
			wantSaves := 2
			if fail {
				wantSaves = 1
			}
			if saves != wantSaves {
				t.Errorf("%d saves, want %d", saves, wantSaves)
			}

			// The registry works on after the batches: a new change saves alone.
			errc := make(chan error, 1)
			go register(9, errc)
			<-st.entered
			st.release <- nil
			if err := <-errc; err != nil {
				t.Fatalf("Register() after the batches: %v", err)
			}
			if !r.Table().Holds(ip(9)) || !ap.addrs()[ip(9)] {
				t.Errorf("%s not published and held after its save", ip(9))
			}
		})
	}
}

// TestGroupCommitReAdd takes an address back while the save that drops it
// runs: the stack still holds it, so it must be neither added twice nor
// released after the drop is published.
func TestGroupCommitReAdd(t *testing.T) {
	st := &gateStore{entered: make(chan *Table), release: make(chan error)}
	r, err := New(Options{Networks: front, Store: st})
	if err != nil {
		t.Fatalf("New() error: %v", err)
	}
	ap := &heldApplier{held: map[netip.Addr]bool{}}
	if err := r.SetApplier(ap); err != nil {
		t.Fatalf("SetApplier() error: %v", err)
	}
	ip := netip.MustParseAddr("198.18.0.10")
	reg := Registration{Name: "s0", IP: ip, Backend: beA}
	errc := make(chan error, 2)
	go func() { _, err := r.Register(reg); errc <- err }()
	<-st.entered
	st.release <- nil
	if err := <-errc; err != nil {
		t.Fatalf("Register() error: %v", err)
	}

	go func() { errc <- r.Deregister("s0", Key{IP: ip}) }()
	<-st.entered // the drop's save, held
	go func() { _, err := r.Register(reg); errc <- err }()
	time.Sleep(50 * time.Millisecond) // let the re-add prepare and wait
	st.release <- nil
	if err := <-errc; err != nil {
		t.Fatalf("Deregister() error: %v", err)
	}
	<-st.entered
	st.release <- nil
	if err := <-errc; err != nil {
		t.Fatalf("Register() again: %v", err)
	}
	if !r.Table().Holds(ip) || !ap.addrs()[ip] {
		t.Errorf("%s published %v, held %v; want both", ip, r.Table().Holds(ip), ap.addrs()[ip])
	}
}

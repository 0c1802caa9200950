package stack

import (
	"context"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestAnnouncer schedules the repeated announcements of 2000 addresses on
// the one goroutine: each live address is announced exactly as often as
// asked, a stopped one not again, a restarted one on its new schedule, and
// no goroutine is started per address.
func TestAnnouncer(t *testing.T) {
	var mu sync.Mutex
	sent := map[netip.Addr]int{}
	an := newAnnouncer(func(a netip.Addr) {
		mu.Lock()
		sent[a]++
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { an.run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	const n = 2000
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i / 256), byte(i % 256)}) }
	before := runtime.NumGoroutine()
	for i := range n {
		an.start(addr(i), 2, 100*time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before+2 {
		t.Errorf("goroutines: %d before scheduling %d addresses, %d after; want no goroutine per address", before, n, g)
	}
	for i := 0; i < n; i += 2 {
		an.stop(addr(i)) // even ones: never announced by the announcer
	}
	an.start(addr(1), 3, 100*time.Millisecond) // restarted: 3 from now on
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, c := range sent {
			total += c
		}
		mu.Unlock()
		if total >= (n/2-1)*2+3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(250 * time.Millisecond) // nothing more may come
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		want := 0
		switch {
		case i == 1:
			want = 3
		case i%2 == 1:
			want = 2
		}
		if got := sent[addr(i)]; got != want {
			t.Errorf("announcements of %s = %d, want %d", addr(i), got, want)
		}
	}
	an.mu.Lock()
	defer an.mu.Unlock()
	if len(an.live) != 0 {
		t.Errorf("after every schedule ended, %d addresses are still live", len(an.live))
	}
}

// Package leakcheck holds the goroutine-leak check that vipmux's unit tests
// share.
package leakcheck

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// Goroutines fails t, in cleanup, if more goroutines run than when it was
// called, after a bounded wait (5 s) for stragglers to exit. Call it before
// any other t.Cleanup so that it runs last.
func Goroutines(t testing.TB) {
	t.Helper()
	stacks := func() (int, []byte) {
		p := pprof.Lookup("goroutine")
		var b bytes.Buffer
		p.WriteTo(&b, 1)
		return p.Count(), b.Bytes()
	}
	start, startStacks := stacks()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if runtime.NumGoroutine() <= start {
				return
			}
		}
		end, endStacks := stacks()
		t.Logf("goroutines at start:\n%s", startStacks)
		t.Logf("goroutines at end:\n%s", endStacks)
		t.Errorf("goroutines: %d at start, %d after cleanup; leak?", start, end)
	})
}

package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/config"
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

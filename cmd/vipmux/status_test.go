package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vipmux/vipmux/control"
)

func TestPrintBindingsHealth(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bs := []control.BindingView{
		{IP: "198.18.0.100", Port: 8080, Members: []control.MemberView{
			{Name: "web-a", Backend: "198.19.0.2:8080", State: "standby", Since: now, Down: true, Reason: "health check failed: connection refused"},
			{Name: "web-b", Backend: "198.19.0.3:8080", State: "active", Since: now, Reason: "automatic failover: web-a health check failed: connection refused", ProxyProtocol: "v2"},
		}},
		{IP: "198.18.0.100", Port: 9090, Members: []control.MemberView{
			{Name: "web-a", Backend: "198.19.0.2:9090", State: "active", Since: now, Down: true, Reason: "health check failed: i/o timeout"},
		}},
	}
	var buf bytes.Buffer
	if err := printBindings(&buf, bs); err != nil {
		t.Fatalf("printBindings: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for i, want := range [][]string{
		{"IP", "PORT", "SERVER", "BACKEND", "PROXY", "STATE", "HEALTH", "CONNS", "SINCE", "REASON"},
		{"web-a", " none ", "standby", "down", "health check failed: connection refused"},
		{"web-b", " v2 ", "active", "up", "automatic failover: web-a"},
		{"9090", "web-a", " none ", "active", "down"},
		{"198.18.0.100:9090 has no healthy server", "web-a is down"},
	} {
		if i >= len(lines) {
			t.Fatalf("printBindings printed %d lines, want at least %d:\n%s", len(lines), i+1, buf.String())
		}
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("printBindings line %d = %q, want it to contain %q", i, lines[i], w)
			}
		}
	}
}

func TestPrintEvents(t *testing.T) {
	var es []control.EventView
	for i := range 15 {
		es = append(es, control.EventView{Time: time.Unix(int64(i), 0), Binding: "198.18.0.100:8080", Member: "web-" + string(rune('a'+i)), What: "down", Why: "health check failed"})
	}
	var buf bytes.Buffer
	if err := printEvents(&buf, es, 10); err != nil {
		t.Fatalf("printEvents: %v", err)
	}
	out := buf.String()
	if !strings.Contains(out, "recent automatic changes (last 10)") || strings.Contains(out, "web-e ") || !strings.Contains(out, "web-f ") || !strings.Contains(out, "web-o ") {
		t.Errorf("printEvents(15 events, 10) =\n%s\nwant a heading and the last 10 (web-f..web-o)", out)
	}
	buf.Reset()
	if err := printEvents(&buf, nil, 10); err != nil || buf.Len() != 0 {
		t.Errorf("printEvents(none) = %q, %v; want nothing", buf.String(), err)
	}
}

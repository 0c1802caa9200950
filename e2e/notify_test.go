package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNotify: with [notify] exec and webhook, a switch, a health check
// that fails, a reload and a refused reload each run the command (the
// event on stdin and in VIPMUX_* variables) and are POSTed to a webhook
// on a server in its namespace; a reload that changes [notify] takes
// effect for the events after it.
func TestNotify(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
	out := filepath.Join(tp.dir, "notified")
	script := filepath.Join(tp.dir, "notify.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n# One write per event: the test reads the file while it grows.\nline=\"$VIPMUX_EVENT|$(cat)\"\nprintf '%s\\n' \"$line\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hook := fmt.Sprintf("http://%s:8080/hook", tp.Server("web-b").IP)
	notifyConfig := sharedConfig + fmt.Sprintf("\n[notify]\nexec = %q\nwebhook = %q\ntimeout = \"2s\"\n", script, hook)
	tp.opts.Extra = notifyConfig
	g := tp.Start()

	tp.RegisterPort("web-a", 8080, "active")
	tp.RegisterPort("web-b", 8080, "standby")
	tp.MustCLI("switch", "--port", "8080", "--to", "web-b")
	// web-c's backend port is closed: its health check fails.
	tp.MustCLI("register", "--name", "web-c", "--port", "8080", "--backend", tp.Server("web-a").IP+":9999", "--state", "standby")
	tp.rewriteConfig(g, notifyConfig+"\n[log]\nlevel = \"debug\"\n")
	tp.MustCLI("reload")
	tp.rewriteConfig(g, notifyConfig+"\n[log]\nlevel = \"loud\"\n")
	if _, _, code := tp.CLI(nil, "reload"); code == 0 {
		t.Fatal("reload of a bad level succeeded")
	}

	type event struct {
		Event, Binding, Member, From, Why string
	}
	want := []event{
		{Event: "switch", Binding: sharedIP + ":8080", Member: "web-b", From: "web-a"},
		{Event: "health_down", Binding: sharedIP + ":8080", Member: "web-c"},
		{Event: "reload"},
		{Event: "reload_refused"},
	}
	// matches reports whether got holds every event of want (the health
	// check's failure comes whenever its probe does, and the checker may
	// add others).
	matches := func(got []event) bool {
		for _, w := range want {
			found := false
			for _, e := range got {
				found = found || e.Event == w.Event && e.Binding == w.Binding && e.Member == w.Member && e.From == w.From
			}
			if !found {
				return false
			}
		}
		return true
	}
	parse := func(lines []string, prefix string) (got []event, kinds []string) {
		for _, l := range lines {
			var e event
			kind, js, _ := strings.Cut(l, prefix)
			if err := json.Unmarshal([]byte(js), &e); err != nil {
				t.Errorf("not an event: %q: %v", l, err)
				continue
			}
			got = append(got, e)
			kinds = append(kinds, kind)
		}
		return got, kinds
	}
	var viaExec, viaHook []event
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(out)
		// Only whole lines: the command may be writing the last one.
		text := string(data)
		if i := strings.LastIndexByte(text, '\n'); i >= 0 {
			text = text[:i]
		} else {
			text = ""
		}
		lines := strings.FieldsFunc(text, func(r rune) bool { return r == '\n' })
		var envKinds []string
		viaExec, envKinds = parse(lines, "|")
		for i, e := range viaExec {
			if envKinds[i] != e.Event {
				t.Fatalf("VIPMUX_EVENT = %q for the event %q on stdin", envKinds[i], e.Event)
			}
		}
		var hookLines []string
		srvLog, _ := os.ReadFile(filepath.Join(tp.dir, "namesrv-web-b.log"))
		for _, l := range strings.Split(string(srvLog), "\n") {
			if _, js, ok := strings.Cut(l, "hook: "); ok {
				hookLines = append(hookLines, "hook: "+js)
			}
		}
		viaHook, _ = parse(hookLines, "hook: ")
		if matches(viaExec) && matches(viaHook) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events:\n exec:    %+v\n webhook: %+v\nwant each of: %+v", viaExec, viaHook, want)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// [notify] is reloadable: without exec, the next event goes only to
	// the webhook.
	tp.rewriteConfig(g, sharedConfig+fmt.Sprintf("\n[notify]\nwebhook = %q\n", hook))
	tp.MustCLI("reload")
	before := len(viaExec)
	tp.MustCLI("switch", "--port", "8080", "--to", "web-a")
	g.waitLog(t, "active member changed", 2)
	time.Sleep(500 * time.Millisecond)
	data, _ := os.ReadFile(out)
	if n := strings.Count(string(data), "\n"); n != before {
		t.Errorf("after a reload without [notify] exec: the command ran %d more times, want 0", n-before)
	}
	if log := g.Log(); strings.Contains(log, "notification failed") {
		t.Errorf("a notification failed:\n%s", log)
	}
}

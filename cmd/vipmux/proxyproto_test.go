package main

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/registry"
)

func TestProxyProtocolFlag(t *testing.T) {
	g := newGateway(t)
	vipmux := func(args ...string) (string, error) {
		t.Helper()
		app := newApp()
		var out bytes.Buffer
		app.Writer, app.ErrWriter = &out, io.Discard
		err := app.Run(append([]string{"vipmux", args[0], "--gateway", g.url}, args[1:]...))
		return out.String(), err
	}
	member := func() registry.Member {
		t.Helper()
		m, _, ok := g.reg.Lookup(netip.MustParseAddr("198.18.0.10"), 80)
		if !ok {
			t.Fatalf("nothing registered on 198.18.0.10")
		}
		return m
	}
	reg := []string{"register", "--name", "web-a", "--ip", "198.18.0.10", "--backend", "127.0.0.1:8080"}

	for _, bad := range []string{"v3", "V2", "2", "yes", ""} {
		_, err := vipmux(append(reg, "--proxy-protocol", bad)...)
		if err == nil || !strings.Contains(err.Error(), "--proxy-protocol") {
			t.Errorf("register --proxy-protocol %q = %v, want an error naming --proxy-protocol", bad, err)
		}
		_, err = vipmux("run", "--name", "web-a", "--ip", "198.18.0.10", "--backend", "127.0.0.1:8080", "--proxy-protocol", bad, "--", "true")
		if err == nil || !strings.Contains(err.Error(), "--proxy-protocol") {
			t.Errorf("run --proxy-protocol %q = %v, want an error naming --proxy-protocol", bad, err)
		}
	}
	if n := g.count(control.PathRegister); n != 0 {
		t.Fatalf("bad --proxy-protocol values made %d register calls, want 0", n)
	}

	for _, tc := range []struct {
		args []string
		want registry.ProxyProtocol
	}{
		{[]string{"--proxy-protocol", "v2"}, registry.ProxyV2},
		{[]string{"--proxy-protocol", "v1"}, registry.ProxyV1},
		{[]string{"--proxy-protocol", "none"}, registry.ProxyNone},
		{[]string{"--proxy-protocol", "v2"}, registry.ProxyV2},
		{nil, registry.ProxyNone}, // registering again without the flag turns it off
	} {
		out, err := vipmux(append(reg, tc.args...)...)
		if err != nil {
			t.Fatalf("register %v: %v", tc.args, err)
		}
		if got := member().ProxyProtocol; got != tc.want {
			t.Errorf("after register %v: member ProxyProtocol = %q, want %q", tc.args, got, tc.want)
		}
		if !strings.Contains(out, " "+tc.want.String()+" ") {
			t.Errorf("register %v printed\n%s\nwant the PROXY column to say %s", tc.args, out, tc.want)
		}
	}

	if _, err := vipmux(append(reg, "--proxy-protocol", "v1")...); err != nil {
		t.Fatal(err)
	}
	out, err := vipmux("status", "--json")
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if !strings.Contains(out, `"proxy_protocol": "v1"`) {
		t.Errorf("status --json =\n%s\nwant proxy_protocol v1", out)
	}
}

// TestRunProxyProtocol: vipmux run registers with its --proxy-protocol.
func TestRunProxyProtocol(t *testing.T) {
	g := newGateway(t)
	var seen atomic.Value // registry.ProxyProtocol of web-a while registered
	g.reg.Watch(func(_, next *registry.Table) {
		if b, ok := next.Binding(registry.Key{IP: netip.MustParseAddr("198.18.0.10")}); ok && len(b.Members) == 1 {
			seen.Store(b.Members[0].ProxyProtocol)
		}
	})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ready := freePort(t)
	t.Setenv("VIPMUX_TEST_HELPER", "1")
	t.Setenv("HELPER_LISTEN", ready.String())
	t.Setenv("HELPER_SLEEP", "300ms")
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	err = app.Run([]string{"vipmux", "run", "--gateway", g.url, "--name", "web-a", "--ip", "198.18.0.10", "--backend", ready.String(), "--proxy-protocol", "v2", "--", exe})
	if err != nil {
		t.Fatalf("vipmux run --proxy-protocol v2: %v", err)
	}
	if got, _ := seen.Load().(registry.ProxyProtocol); got != registry.ProxyV2 {
		t.Errorf("vipmux run --proxy-protocol v2 registered with %q, want v2", got)
	}
}

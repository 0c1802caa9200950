package dispatch_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
)

// proxyReport reads an optional PROXY protocol header, says on one line
// what it learnt ("v2 198.18.0.1:40000 198.18.0.10:8080", or "none"), then
// echoes the client's bytes that follow the header.
func proxyReport(c *net.TCPConn) {
	br := bufio.NewReader(c)
	line := "none"
	h, err := proxyproto.Read(br)
	switch {
	case err == nil:
		src, dst, ok := h.TCPAddrs()
		if !ok {
			line = "bad header: not TCP"
			break
		}
		line = fmt.Sprintf("v%d %s %s", h.Version, src.AddrPort(), dst.AddrPort())
	case !errors.Is(err, proxyproto.ErrNoProxyProtocol):
		line = "bad header: " + err.Error()
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return
	}
	io.Copy(c, br)
	c.CloseWrite()
}

// TestProxyProtocol: a member's PROXY protocol setting makes the gateway
// send the header, with the client's address and the front address it
// dialled, before the client's first byte; members without it get none.
func TestProxyProtocol(t *testing.T) {
	e := newEnv(t, dispatch.Options{})
	be := newBackend(t, proxyReport)
	vipB := netip.MustParseAddr("198.18.0.11")
	e.register(t, registry.Registration{Name: "v1", IP: vip, Backend: be.addr, ProxyProtocol: registry.ProxyV1})
	e.register(t, registry.Registration{Name: "v2", IP: vipB, Backend: be.addr, ProxyProtocol: registry.ProxyV2})
	e.register(t, registry.Registration{Name: "A", IP: shared, Port: 8080, Backend: be.addr, State: registry.Active, ProxyProtocol: registry.ProxyV2})
	e.register(t, registry.Registration{Name: "B", IP: shared, Port: 8080, Backend: be.addr, State: registry.Standby})

	// hello dials dst, returns the backend's report and checks that the
	// client's bytes arrive intact after the header (the backend's parser
	// would have eaten them, or failed, had they come first).
	hello := func(dst netip.AddrPort) (report string, client netip.AddrPort) {
		t.Helper()
		c := e.mustDial(t, dst)
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		// The client speaks first: a backend without a header cannot tell
		// "no header" from "not yet" until bytes arrive.
		if _, err := io.WriteString(c, "hello"); err != nil {
			t.Fatalf("dial %s: write: %v", dst, err)
		}
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("dial %s: reading the backend's report: %v", dst, err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(r, got); err != nil || string(got) != "hello" {
			t.Fatalf("dial %s: echo = %q, %v; want hello", dst, got, err)
		}
		la := c.LocalAddr().(*net.TCPAddr).AddrPort()
		return strings.TrimSuffix(line, "\n"), netip.AddrPortFrom(la.Addr().Unmap(), la.Port())
	}
	want := func(v string, client, dst netip.AddrPort) string {
		return fmt.Sprintf("%s %s %s", v, client, dst)
	}

	for _, tc := range []struct {
		dst netip.AddrPort
		v   string
	}{
		{netip.AddrPortFrom(vip, 80), "v1"},
		{netip.AddrPortFrom(vip, 4443), "v1"},
		{netip.AddrPortFrom(vipB, 8080), "v2"},
		{netip.AddrPortFrom(shared, 8080), "v2"},
	} {
		got, client := hello(tc.dst)
		if client.Addr() != clientIP {
			t.Fatalf("client local address %s, want %s", client, clientIP)
		}
		if w := want(tc.v, client, tc.dst); got != w {
			t.Errorf("backend of %s learnt %q, want %q", tc.dst, got, w)
		}
	}

	// Switch to B, which has no setting: no header.
	if _, err := e.reg.Switch(registry.Key{IP: shared, Port: 8080}, "B"); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	if got, _ := hello(netip.AddrPortFrom(shared, 8080)); got != "none" {
		t.Errorf("after switching to B (no PROXY protocol): backend learnt %q, want none", got)
	}
	if diff := cmp.Diff(map[dispatch.Outcome]uint64{dispatch.Proxied: 5}, nonZero(e.fwd.Outcomes())); diff != "" {
		t.Errorf("Outcomes() (-want +got):\n%s", diff)
	}
}

// closeRecorder is a backend connection that records Close.
type closeRecorder struct {
	net.Conn
	closed atomic.Bool
}

func (c *closeRecorder) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// TestProxyProtocolWriteFails: when the backend connection does not take
// the header, the client gets a RST, the backend connection is closed and
// nothing is left running (newEnv checks for leaked goroutines).
func TestProxyProtocolWriteFails(t *testing.T) {
	var conns []*closeRecorder
	e := newEnv(t, dispatch.Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		ours, theirs := net.Pipe()
		theirs.Close() // every write on ours fails
		c := &closeRecorder{Conn: ours}
		conns = append(conns, c) // Handle runs one SYN at a time here
		return c, nil
	}})
	e.register(t, registry.Registration{Name: "A", IP: vip, Backend: netip.MustParseAddrPort("127.0.0.1:9"), ProxyProtocol: registry.ProxyV2})

	c, err := e.dial(netip.AddrPortFrom(vip, 80))
	if err == nil {
		c.Close()
		t.Fatalf("dial through a backend that cannot take the header succeeded, want a RST")
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial error = %v, want connection refused (RST)", err)
	}
	if len(conns) != 1 || !conns[0].closed.Load() {
		t.Errorf("backend connections dialled: %d, closed: %v; want 1, closed", len(conns), len(conns) == 1 && conns[0].closed.Load())
	}
	if diff := cmp.Diff(map[dispatch.Outcome]uint64{dispatch.Refused: 1}, nonZero(e.fwd.Outcomes())); diff != "" {
		t.Errorf("Outcomes() (-want +got):\n%s", diff)
	}
	if n := e.fwd.Conns(registry.Key{IP: vip}, "A"); n != 0 {
		t.Errorf("Conns = %d, want 0", n)
	}
}

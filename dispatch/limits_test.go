package dispatch_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/internal/leakcheck"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// synEnv is a gateway whose front is a bare IP wire: the test writes raw
// SYNs into it and never answers the SYN-ACKs, as a client that drops
// them. Its dials go to a sink backend and are counted.
type synEnv struct {
	wire *channel.Endpoint
	fwd  *dispatch.Forwarder
	// dials counts the backend dials; open the backend connections not
	// yet closed by the forwarder.
	dials atomic.Int64
	mu    sync.Mutex
	open  map[*trackedConn]struct{}
}

// trackedConn is a backend connection that leaves synEnv.open on Close.
type trackedConn struct {
	net.Conn
	e    *synEnv
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.e.mu.Lock()
		delete(c.e.open, c)
		c.e.mu.Unlock()
	})
	return c.Conn.Close()
}

func newSynEnv(t *testing.T, l dispatch.Limits) *synEnv {
	t.Helper()
	leakcheck.Goroutines(t)
	be := newBackend(t, sink)
	reg, err := registry.New(registry.Options{Networks: []netip.Prefix{frontNet}, AllowLoopbackBackends: true})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	e := &synEnv{wire: channel.New(1024, 1500, ""), open: map[*trackedConn]struct{}{}}
	st, err := stack.New(stack.Options{Link: e.wire, Networks: []netip.Prefix{frontNet}, Logger: discard})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(st.Close)
	// Read what the gateway sends (SYN-ACKs, RSTs) and drop it.
	ctx, cancel := context.WithCancel(context.Background())
	var drained sync.WaitGroup
	drained.Go(func() {
		for e.wire.ReadContext(ctx) != nil {
		}
	})
	t.Cleanup(func() { cancel(); drained.Wait(); e.wire.Drain() })
	if err := reg.SetApplier(st); err != nil {
		t.Fatalf("SetApplier: %v", err)
	}
	if _, err := reg.Register(registry.Registration{Name: "srv", IP: vip, Backend: be.addr}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	var d net.Dialer
	e.fwd = dispatch.New(dispatch.Options{Table: reg, Logger: discard, Limits: l,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			e.dials.Add(1)
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := &trackedConn{Conn: c, e: e}
			e.mu.Lock()
			e.open[tc] = struct{}{}
			e.mu.Unlock()
			return tc, nil
		}})
	t.Cleanup(e.fwd.Close)
	st.HandleTCP(1024, e.fwd.Handle)
	return e
}

// syn writes one SYN from src:port to vip:80.
func (e *synEnv) syn(src netip.Addr, port uint16) {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	s, d := stack.ToAddr(src), stack.ToAddr(vip)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: s, DstAddr: d})
	ip.SetChecksum(^ip.CalculateChecksum())
	seg := header.TCP(b[header.IPv4MinimumSize:])
	seg.Encode(&header.TCPFields{SrcPort: port, DstPort: 80, SeqNum: 1000, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, s, d, header.TCPMinimumSize)
	seg.SetChecksum(^seg.CalculateChecksum(checksum.Checksum(nil, sum)))
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	e.wire.InjectInbound(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
}

// openBackends is the number of backend connections the forwarder holds.
func (e *synEnv) openBackends() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.open)
}

// waitFor polls cond for at most 10 s and fails t with what if it never
// holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 10s", what)
}

// TestHandshakeTimeout: a client that never answers the SYN-ACK is given
// up after the handshake timeout (gVisor alone waits ~127 s), and the
// backend connection dialled for it is closed.
func TestHandshakeTimeout(t *testing.T) {
	e := newSynEnv(t, dispatch.Limits{HandshakeTimeout: 300 * time.Millisecond})
	src := netip.MustParseAddr("198.18.0.2")
	for port := range uint16(3) {
		e.syn(src, 40000+port)
	}
	waitFor(t, "3 SYNs in flight", func() bool { return e.fwd.InFlight() == 3 })
	waitFor(t, "the handshakes given up", func() bool { return e.fwd.Outcomes()[dispatch.HandshakeFailed] == 3 })
	waitFor(t, "their backend connections closed", func() bool { return e.openBackends() == 0 })
	if n := e.fwd.InFlight(); n != 0 {
		t.Errorf("InFlight() = %d after the handshakes ended, want 0", n)
	}
	if n := e.dials.Load(); n != 3 {
		t.Errorf("backend dials = %d, want 3 (dial first, below handshake_first_above)", n)
	}
}

// TestHandshakeFirst: above HandshakeFirstAbove handshakes in flight, the
// backend is not dialled before the client completed its handshake; Close
// ends the handshakes in flight instead of waiting for them.
func TestHandshakeFirst(t *testing.T) {
	tests := []struct {
		name      string
		above     int
		wantDials int64
	}{
		{"first two dialled", 2, 2},
		{"always handshake first", -1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newSynEnv(t, dispatch.Limits{HandshakeTimeout: time.Minute, HandshakeFirstAbove: tc.above})
			for port := range uint16(10) {
				e.syn(netip.MustParseAddr("198.18.0.2"), 40000+port)
				// One at a time, so that the order of arrival is the
				// order of the SYNs.
				waitFor(t, "SYN in flight", func() bool { return e.fwd.InFlight() == int(port)+1 })
			}
			waitFor(t, "the dials done", func() bool { return e.openBackends() == int(tc.wantDials) })
			if n := e.dials.Load(); n != tc.wantDials {
				t.Errorf("backend dials for 10 unanswered handshakes = %d, want %d", n, tc.wantDials)
			}
			closeWithin(t, e.fwd, 2*time.Second)
			if n := e.openBackends(); n != 0 {
				t.Errorf("backend connections open after Close = %d, want 0", n)
			}
			if diff := cmp.Diff(map[dispatch.Outcome]uint64{dispatch.HandshakeFailed: 10}, nonZero(e.fwd.Outcomes())); diff != "" {
				t.Errorf("Outcomes() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSourceLimit: one source holds at most MaxInFlightPerSource
// handshakes; another source is not affected.
func TestSourceLimit(t *testing.T) {
	e := newSynEnv(t, dispatch.Limits{HandshakeTimeout: time.Minute, MaxInFlightPerSource: 3})
	flood, other := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
	for port := range uint16(6) {
		e.syn(flood, 40000+port)
	}
	waitFor(t, "3 dropped", func() bool { return e.fwd.Outcomes()[dispatch.SourceLimit] == 3 })
	e.syn(other, 40000)
	waitFor(t, "4 in flight", func() bool { return e.fwd.InFlight() == 4 })
	if diff := cmp.Diff(map[dispatch.Outcome]uint64{dispatch.SourceLimit: 3}, nonZero(e.fwd.Outcomes())); diff != "" {
		t.Errorf("Outcomes() (-want +got):\n%s", diff)
	}
}

// TestMaxConnections: over MaxConnections a SYN gets RST, counted; once a
// connection ends, a new one is accepted.
func TestMaxConnections(t *testing.T) {
	e := newEnv(t, dispatch.Options{Limits: dispatch.Limits{MaxConnections: 1}})
	be := newBackend(t, echo)
	e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
	dst := netip.AddrPortFrom(vip, 80)

	c, err := e.dial(dst)
	if err != nil {
		t.Fatalf("first DialContextTCP(%s): %v", dst, err)
	}
	echoOnce(t, c, "one")
	if c2, err := e.dial(dst); err == nil {
		c2.Close()
		t.Fatalf("second DialContextTCP(%s) with max_connections 1 succeeded, want connection refused", dst)
	} else if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("second DialContextTCP(%s) = %v, want connection refused", dst, err)
	}
	if got := e.fwd.Outcomes()[dispatch.MaxConnections]; got != 1 {
		t.Errorf("Outcomes()[MaxConnections] = %d, want 1", got)
	}
	s, _ := statsOf(e.fwd, registry.Key{IP: vip}, "srv")
	if got := s.Outcomes[dispatch.MaxConnections]; got != 1 {
		t.Errorf("member srv's MaxConnections count = %d, want 1", got)
	}
	c.Close()
	e.waitConns(t, registry.Key{IP: vip}, "srv", 0)
	echoOnce(t, e.mustDial(t, dst), "again")
}

// TestIdleTimeout: a connection that carries nothing either way for the
// idle timeout is closed on both sides; one that keeps sending is not.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, dispatch.Options{Limits: dispatch.Limits{IdleTimeout: 500 * time.Millisecond}})
	closed := make(chan struct{})
	be := newBackend(t, func(c *net.TCPConn) {
		if _, err := c.Read(make([]byte, 1)); err != nil {
			close(closed) // the forwarder closed the backend's side
		}
	})
	busyBE := newBackend(t, echo)
	e.register(t, registry.Registration{Name: "idle", IP: vip, Backend: be.addr})
	e.register(t, registry.Registration{Name: "busy", IP: netip.MustParseAddr("198.18.0.11"), Backend: busyBE.addr})

	idle := e.mustDial(t, netip.AddrPortFrom(vip, 80))
	busy := e.mustDial(t, netip.MustParseAddrPort("198.18.0.11:80"))
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		idle.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := idle.Read(make([]byte, 1))
		done <- err
	}()
	for time.Since(start) < 2*time.Second {
		echoOnce(t, busy, "x")
		time.Sleep(100 * time.Millisecond)
	}
	var ne net.Error
	if err := <-done; err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("Read on a connection idle for 10 s with idle_timeout 500ms = %v, want EOF or reset", err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Errorf("the backend's side of the idle connection was not closed")
	}
	echoOnce(t, busy, "still")
	if n := e.fwd.IdleClosed(); n != 1 {
		t.Errorf("IdleClosed() = %d, want 1", n)
	}
}

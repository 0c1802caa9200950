package dispatch_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"github.com/vipmux/vipmux/internal/leakcheck"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

const (
	gatewayMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	clientMAC  = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
	clientNIC  = tcpip.NICID(1)
)

var (
	frontNet = netip.MustParsePrefix("198.18.0.0/24")
	clientIP = netip.MustParseAddr("198.18.0.1")
	vip      = netip.MustParseAddr("198.18.0.10")  // mode 1 address
	shared   = netip.MustParseAddr("198.18.0.100") // mode 2 address
)

var discard = slog.New(slog.DiscardHandler)

// env is a gateway (registry, stack, forwarder) and a client stack joined
// by an Ethernet pipe: the whole data path in one process.
type env struct {
	reg    *registry.Registry
	st     *stack.Stack
	fwd    *dispatch.Forwarder
	client *gstack.Stack
}

// newEnv builds an env on a 1500-byte Ethernet link; opts.Table and
// opts.Logger are filled in. Everything is closed in cleanup, forwarder
// first, and checked for goroutine leaks.
func newEnv(t testing.TB, opts dispatch.Options) *env {
	t.Helper()
	return newEnvMTU(t, 1500, opts)
}

// newEnvMTU is newEnv with a link MTU of mtu.
func newEnvMTU(t testing.TB, mtu uint32, opts dispatch.Options) *env {
	t.Helper()
	leakcheck.Goroutines(t)
	reg, err := registry.New(registry.Options{Networks: []netip.Prefix{frontNet}, AllowLoopbackBackends: true})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	gwLink, clientLink := pipe.New(gatewayMAC, clientMAC, mtu)

	client := newClientStack(t, ethernet.New(clientLink))

	st, err := stack.New(stack.Options{
		Link:     ethernet.New(gwLink),
		Networks: []netip.Prefix{frontNet},
		TimeWait: time.Second,
		Logger:   discard,
	})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(st.Close)
	if err := reg.SetApplier(st); err != nil {
		t.Fatalf("SetApplier: %v", err)
	}

	opts.Table, opts.Logger = reg, discard
	fwd := dispatch.New(opts)
	t.Cleanup(fwd.Close)
	reg.Watch(fwd.Prune)
	st.HandleTCP(64, fwd.Handle)
	return &env{reg: reg, st: st, fwd: fwd, client: client}
}

// newClientStack returns a plain gVisor stack at 198.18.0.1/24 on link.
func newClientStack(t testing.TB, link gstack.LinkEndpoint) *gstack.Stack {
	t.Helper()
	s := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
	})
	t.Cleanup(func() { s.Close(); s.Wait() })
	sack := tcpip.TCPSACKEnabled(true)
	tw := tcpip.TCPTimeWaitTimeoutOption(time.Second)
	for _, o := range []tcpip.SettableTransportProtocolOption{
		&sack, &tw,
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20},
		&tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20},
	} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			t.Fatalf("client SetTransportProtocolOption(%T): %s", o, err)
		}
	}
	if err := s.CreateNIC(clientNIC, link); err != nil {
		t.Fatalf("client CreateNIC: %s", err)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: stack.ToAddr(clientIP), PrefixLen: frontNet.Bits()},
	}
	if err := s.AddProtocolAddress(clientNIC, pa, gstack.AddressProperties{}); err != nil {
		t.Fatalf("client AddProtocolAddress(%s): %s", clientIP, err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: clientNIC}})
	return s
}

// register adds a member or fails t.
func (e *env) register(t testing.TB, reg registry.Registration) {
	t.Helper()
	if _, err := e.reg.Register(reg); err != nil {
		t.Fatalf("Register(%+v): %v", reg, err)
	}
}

// dial connects the client stack to dst through the gateway.
func (e *env) dial(dst netip.AddrPort) (*gonet.TCPConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, e.client, tcpip.FullAddress{NIC: clientNIC, Addr: stack.ToAddr(dst.Addr()), Port: dst.Port()}, ipv4.ProtocolNumber)
}

// mustDial is dial that fails t on error and closes the connection in
// cleanup.
func (e *env) mustDial(t testing.TB, dst netip.AddrPort) *gonet.TCPConn {
	t.Helper()
	c, err := e.dial(dst)
	if err != nil {
		t.Fatalf("DialContextTCP(%s): %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitConns polls Conns(k, name) until it is want, for at most 5 s.
func (e *env) waitConns(t testing.TB, k registry.Key, name string, want int64) {
	t.Helper()
	var got int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got = e.fwd.Conns(k, name); got == want {
			return
		}
	}
	t.Fatalf("Conns(%s, %s) = %d after 5s, want %d", k, name, got, want)
}

// nonZero returns the outcomes that happened.
func nonZero(m map[dispatch.Outcome]uint64) map[dispatch.Outcome]uint64 {
	out := map[dispatch.Outcome]uint64{}
	for o, n := range m {
		if n != 0 {
			out[o] = n
		}
	}
	return out
}

// backend is a kernel TCP listener on 127.0.0.1 that runs handle for every
// connection on a goroutine of its own.
type backend struct {
	addr    netip.AddrPort
	accepts atomic.Int64
}

// newBackend starts a backend; cleanup closes the listener and every
// connection and waits for the goroutines.
func newBackend(t testing.TB, handle func(*net.TCPConn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen: %v", err)
	}
	b := &backend{addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepts.Add(1)
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return b
}

// echo copies c back to itself and half-closes at EOF.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// namedEcho says name on a line of its own, then echoes.
func namedEcho(name string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		echo(c)
	}
}

// sha reads c to EOF and answers the SHA-256 of what it read.
func sha(c *net.TCPConn) {
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil {
		return
	}
	c.Write(h.Sum(nil))
	c.CloseWrite()
}

// sink reads c to EOF and answers the byte count, 8 bytes big-endian.
func sink(c *net.TCPConn) {
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return
	}
	c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	c.CloseWrite()
}

// closedPort returns a 127.0.0.1 address on which nothing listens.
func closedPort(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen: %v", err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

// echoOnce writes msg on c and reads it back.
func echoOnce(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("Write(%q): %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("ReadFull after Write(%q): %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo of %q = %q", msg, got)
	}
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// TestOutcomes checks what becomes of a SYN: proxied, or a RST to the
// client with the outcome counted.
func TestOutcomes(t *testing.T) {
	tests := []struct {
		name string
		// setup registers bindings and returns the address to dial.
		setup        func(t *testing.T, e *env) netip.AddrPort
		opts         dispatch.Options
		wantProxied  bool
		wantOutcomes map[dispatch.Outcome]uint64
	}{
		{
			name: "proxied",
			setup: func(t *testing.T, e *env) netip.AddrPort {
				be := newBackend(t, echo)
				e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
				return netip.AddrPortFrom(vip, 80)
			},
			wantProxied:  true,
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Proxied: 1},
		},
		{
			name: "backend port 0 is the dialled port",
			setup: func(t *testing.T, e *env) netip.AddrPort {
				be := newBackend(t, echo)
				e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: netip.AddrPortFrom(be.addr.Addr(), 0)})
				return netip.AddrPortFrom(vip, be.addr.Port())
			},
			wantProxied:  true,
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Proxied: 1},
		},
		{
			name: "backend refused",
			setup: func(t *testing.T, e *env) netip.AddrPort {
				e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: closedPort(t)})
				return netip.AddrPortFrom(vip, 80)
			},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.Refused: 1},
		},
		{
			name: "no binding for the port",
			setup: func(t *testing.T, e *env) netip.AddrPort {
				e.register(t, registry.Registration{Name: "srv", IP: shared, Port: 8080, Backend: netip.MustParseAddrPort("127.0.0.1:9")})
				return netip.AddrPortFrom(shared, 80)
			},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.NoRoute: 1},
		},
		{
			name: "no active member",
			setup: func(t *testing.T, e *env) netip.AddrPort {
				e.register(t, registry.Registration{Name: "srv", IP: shared, Port: 8080, Backend: netip.MustParseAddrPort("127.0.0.1:9"), State: registry.Standby})
				return netip.AddrPortFrom(shared, 8080)
			},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.NoRoute: 1},
		},
		{
			name: "dial timeout",
			setup: func(t *testing.T, e *env) netip.AddrPort {
				e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: netip.MustParseAddrPort("127.0.0.1:9")})
				return netip.AddrPortFrom(vip, 80)
			},
			opts: dispatch.Options{
				DialTimeout: 200 * time.Millisecond,
				Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
					<-ctx.Done()
					return nil, ctx.Err()
				},
			},
			wantOutcomes: map[dispatch.Outcome]uint64{dispatch.DialTimeout: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts)
			dst := tc.setup(t, e)
			start := time.Now()
			c, err := e.dial(dst)
			switch {
			case tc.wantProxied && err != nil:
				t.Fatalf("DialContextTCP(%s) = %v, want a connection", dst, err)
			case tc.wantProxied:
				echoOnce(t, c, "ping")
				c.Close()
			case err == nil:
				c.Close()
				t.Fatalf("DialContextTCP(%s) succeeded, want connection refused", dst)
			case !strings.Contains(err.Error(), "refused"):
				// A RST in SYN-SENT is "connection refused"; anything else
				// (a timeout) means the gateway did not answer.
				t.Fatalf("DialContextTCP(%s) = %v after %v, want connection refused (RST)", dst, err, time.Since(start))
			}
			if diff := cmp.Diff(tc.wantOutcomes, nonZero(e.fwd.Outcomes())); diff != "" {
				t.Errorf("Outcomes() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConns checks the live-connection count of a member while a proxied
// connection is open and after it is closed.
func TestConns(t *testing.T) {
	e := newEnv(t, dispatch.Options{})
	be := newBackend(t, echo)
	e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
	key := registry.Key{IP: vip}

	c := e.mustDial(t, netip.AddrPortFrom(vip, 443))
	echoOnce(t, c, "hello")
	if got := e.fwd.Conns(key, "srv"); got != 1 {
		t.Errorf("Conns(%s, srv) with one open connection = %d, want 1", key, got)
	}
	if got := e.fwd.Conns(key, "other"); got != 0 {
		t.Errorf("Conns(%s, other) = %d, want 0", key, got)
	}
	if got := be.accepts.Load(); got != 1 {
		t.Errorf("backend accepts = %d, want 1", got)
	}
	c.Close()
	e.waitConns(t, key, "srv", 0)
}

// TestHalfClose checks that the client's FIN reaches the backend as EOF
// while the other direction stays open for the answer.
func TestHalfClose(t *testing.T) {
	e := newEnv(t, dispatch.Options{})
	be := newBackend(t, sha)
	e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})

	c := e.mustDial(t, netip.AddrPortFrom(vip, 80))
	c.SetDeadline(time.Now().Add(10 * time.Second))
	data := randomBytes(1<<20, 1)
	if _, err := c.Write(data); err != nil {
		t.Fatalf("Write(1 MiB): %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("ReadAll after CloseWrite: %v", err)
	}
	want := sha256.Sum256(data)
	if !bytes.Equal(got, want[:]) {
		t.Errorf("answer after CloseWrite = %x, want sha256 %x", got, want)
	}
}

// TestLargeTransfer pushes 32 MiB each way at once through an echo
// backend and compares checksums. The link has jumbo frames: at 1500 bytes
// the race detector makes gVisor's per-segment work take ~18 s for this
// test; the other tests cover segmentation at 1500.
func TestLargeTransfer(t *testing.T) {
	const size = 32 << 20
	e := newEnvMTU(t, 9000, dispatch.Options{})
	be := newBackend(t, echo)
	e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})

	c := e.mustDial(t, netip.AddrPortFrom(vip, 80))
	c.SetDeadline(time.Now().Add(25 * time.Second))
	data := randomBytes(size, 2)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("reading the echo: %v after %d bytes", err, n)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing %d bytes: %v", size, err)
	}
	want := sha256.Sum256(data)
	if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("echo = %d bytes sha256 %x, want %d bytes sha256 %x", n, h.Sum(nil), size, want)
	}
}

// TestSwitch checks mode 2: new connections go to the active member, a
// switch sends new connections to the new active member, and connections
// opened before the switch keep working.
func TestSwitch(t *testing.T) {
	e := newEnv(t, dispatch.Options{})
	a, b := newBackend(t, namedEcho("A")), newBackend(t, namedEcho("B"))
	e.register(t, registry.Registration{Name: "A", IP: shared, Port: 8080, Backend: a.addr, State: registry.Active})
	e.register(t, registry.Registration{Name: "B", IP: shared, Port: 8080, Backend: b.addr, State: registry.Standby})
	key := registry.Key{IP: shared, Port: 8080}
	dst := netip.AddrPortFrom(shared, 8080)

	// hello dials dst and returns the connection and its backend's name.
	hello := func() (*gonet.TCPConn, *bufio.Reader, string) {
		t.Helper()
		c := e.mustDial(t, dst)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		name, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the backend's name: %v", err)
		}
		c.SetReadDeadline(time.Time{})
		return c, r, strings.TrimSuffix(name, "\n")
	}

	before, beforeR, got := hello()
	if got != "A" {
		t.Fatalf("before the switch: connection went to %q, want A", got)
	}
	if _, err := e.reg.Switch(key, "B"); err != nil {
		t.Fatalf("Switch(%s, B): %v", key, err)
	}
	after, _, got := hello()
	if got != "B" {
		t.Fatalf("after the switch: connection went to %q, want B", got)
	}
	echoOnce(t, after, "to B")

	// The connection opened before the switch still reaches A.
	before.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(before, "still A"); err != nil {
		t.Fatalf("Write on the pre-switch connection: %v", err)
	}
	buf := make([]byte, len("still A"))
	if _, err := io.ReadFull(beforeR, buf); err != nil || string(buf) != "still A" {
		t.Fatalf("echo on the pre-switch connection = %q, %v; want %q", buf, err, "still A")
	}

	live := map[string]int64{"A": e.fwd.Conns(key, "A"), "B": e.fwd.Conns(key, "B")}
	if diff := cmp.Diff(map[string]int64{"A": 1, "B": 1}, live); diff != "" {
		t.Errorf("Conns(%s, ·) (-want +got):\n%s", key, diff)
	}
	if got := []int64{a.accepts.Load(), b.accepts.Load()}; !cmp.Equal(got, []int64{1, 1}) {
		t.Errorf("backend accepts [A B] = %v, want [1 1]", got)
	}
	before.Close()
	after.Close()
	e.waitConns(t, key, "A", 0)
	e.waitConns(t, key, "B", 0)
}

// TestAbort checks that a reset on either side tears the whole proxied
// connection down: the other side is closed and the member's count drops.
// TestPrune: deregistering a member resets its established connections at
// once (they would otherwise hang on an address that goes away), while the
// connections of members that stay, switched or not, keep running.
func TestPrune(t *testing.T) {
	e := newEnv(t, dispatch.Options{})
	a, b := newBackend(t, echo), newBackend(t, echo)
	mode1 := registry.Key{IP: netip.MustParseAddr("198.18.0.10")}
	port := registry.Key{IP: shared, Port: 8080}
	e.register(t, registry.Registration{Name: "A", IP: mode1.IP, Backend: a.addr})
	e.register(t, registry.Registration{Name: "A", IP: shared, Port: 8080, Backend: a.addr, State: registry.Active})
	e.register(t, registry.Registration{Name: "B", IP: shared, Port: 8080, Backend: b.addr, State: registry.Standby})

	c1 := e.mustDial(t, netip.AddrPortFrom(mode1.IP, 9000))
	c2 := e.mustDial(t, netip.AddrPortFrom(shared, 8080)) // to A
	echoOnce(t, c1, "one")
	echoOnce(t, c2, "two")
	if _, err := e.reg.Switch(port, "B"); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	c3 := e.mustDial(t, netip.AddrPortFrom(shared, 8080)) // to B
	echoOnce(t, c2, "switched, still A")

	if err := e.reg.Deregister("A", mode1); err != nil {
		t.Fatalf("Deregister(A, %s): %v", mode1, err)
	}
	c1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c1.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read on a deregistered member's connection = %v, want a reset", err)
	}
	e.waitConns(t, mode1, "A", 0)
	echoOnce(t, c2, "A on the port is still registered")
	echoOnce(t, c3, "B untouched")

	if err := e.reg.Deregister("A", port); err != nil {
		t.Fatalf("Deregister(A, %s): %v", port, err)
	}
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read on the deregistered port member's connection = %v, want a reset", err)
	}
	e.waitConns(t, port, "A", 0)
	echoOnce(t, c3, "B still untouched")
	for _, c := range []net.Conn{c1, c2, c3} {
		c.Close()
	}
	e.waitConns(t, port, "B", 0)
}

func TestAbort(t *testing.T) {
	tests := []struct {
		name    string
		backend func(done chan<- struct{}) func(*net.TCPConn)
		client  func(t *testing.T, c *gonet.TCPConn)
	}{
		{
			// Closing with unread data makes the client send a RST.
			name: "client resets",
			backend: func(done chan<- struct{}) func(*net.TCPConn) {
				return func(c *net.TCPConn) {
					defer close(done)
					c.Write([]byte("unread"))
					io.Copy(io.Discard, c) // until the proxy closes us
				}
			},
			client: func(t *testing.T, c *gonet.TCPConn) {
				// Let "unread" arrive; if it has not, the client sends a
				// FIN instead and the test still checks teardown.
				time.Sleep(50 * time.Millisecond)
				c.Close()
			},
		},
		{
			name: "backend resets",
			backend: func(done chan<- struct{}) func(*net.TCPConn) {
				return func(c *net.TCPConn) {
					defer close(done)
					buf := make([]byte, 1)
					io.ReadFull(c, buf)
					c.SetLinger(0)
					c.Close()
				}
			},
			client: func(t *testing.T, c *gonet.TCPConn) {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write([]byte("x")); err != nil {
					t.Fatalf("Write: %v", err)
				}
				n, err := c.Read(make([]byte, 1))
				var ne net.Error
				if err == nil || errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("Read after the backend reset = %d, %v; want EOF or reset", n, err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, dispatch.Options{})
			done := make(chan struct{})
			be := newBackend(t, tc.backend(done))
			e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
			key := registry.Key{IP: vip}
			c := e.mustDial(t, netip.AddrPortFrom(vip, 80))
			e.waitConns(t, key, "srv", 1)
			tc.client(t, c)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("backend connection still open 5s after the abort")
			}
			e.waitConns(t, key, "srv", 0)
		})
	}
}

// TestClose checks that Close closes live proxied connections, returns,
// and that the gateway then refuses new SYNs.
func TestClose(t *testing.T) {
	e := newEnv(t, dispatch.Options{})
	be := newBackend(t, echo)
	e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
	dst := netip.AddrPortFrom(vip, 80)

	conns := []*gonet.TCPConn{e.mustDial(t, dst), e.mustDial(t, dst)}
	for _, c := range conns {
		echoOnce(t, c, "open")
	}
	closeWithin(t, e.fwd, 5*time.Second)

	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("conn %d: Read after Close = %d, %v; want EOF or reset", i, n, err)
		}
	}
	if got := e.fwd.Conns(registry.Key{IP: vip}, "srv"); got != 0 {
		t.Errorf("Conns after Close = %d, want 0", got)
	}

	before := e.fwd.Outcomes()[dispatch.NoRoute]
	if c, err := e.dial(dst); err == nil {
		c.Close()
		t.Fatalf("DialContextTCP(%s) after Close succeeded, want connection refused", dst)
	} else if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("DialContextTCP(%s) after Close = %v, want connection refused", dst, err)
	}
	if got := e.fwd.Outcomes()[dispatch.NoRoute] - before; got != 1 {
		t.Errorf("Outcomes()[NoRoute] grew by %d after a SYN to the closed forwarder, want 1", got)
	}
}

// TestCloseDuringDial checks that Close cancels a backend dial in flight
// instead of waiting for the dial timeout, and the client gets a RST.
func TestCloseDuringDial(t *testing.T) {
	dialing := make(chan struct{})
	e := newEnv(t, dispatch.Options{
		DialTimeout: time.Minute,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			close(dialing)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: netip.MustParseAddrPort("127.0.0.1:9")})
	dst := netip.AddrPortFrom(vip, 80)

	closeDuringDial(t, e, dst, dialing)
	if diff := cmp.Diff(map[dispatch.Outcome]uint64{dispatch.Refused: 1}, nonZero(e.fwd.Outcomes())); diff != "" {
		t.Errorf("Outcomes() (-want +got):\n%s", diff)
	}
}

// closeWithin calls f.Close and fails t if it does not return within d.
// closeDuringDial connects to dst, waits until the backend dial has
// started (dialing receives), closes the Forwarder and checks that the
// client was refused.
func closeDuringDial(t *testing.T, e *env, dst netip.AddrPort, dialing <-chan struct{}) {
	t.Helper()
	derr := make(chan error, 1)
	go func() {
		c, err := e.dial(dst)
		if err == nil {
			c.Close()
		}
		derr <- err
	}()
	select {
	case <-dialing:
	case <-time.After(5 * time.Second):
		t.Fatal("backend dial not started within 5s of the client's SYN")
	}
	closeWithin(t, e.fwd, 5*time.Second)
	if err := <-derr; err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("DialContextTCP(%s) with Close during the backend dial = %v, want connection refused", dst, err)
	}
}

func closeWithin(t testing.TB, f *dispatch.Forwarder, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { f.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("Forwarder.Close did not return within %v", d)
	}
}

// BenchmarkConnect measures a whole proxied connection: handshake, backend
// dial, a 1-byte echo and close.
func BenchmarkConnect(b *testing.B) {
	e := newEnv(b, dispatch.Options{})
	be := newBackend(b, echo)
	e.register(b, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
	dst := netip.AddrPortFrom(vip, 80)
	buf := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		c, err := e.dial(dst)
		if err != nil {
			b.Fatalf("DialContextTCP(%s): %v", dst, err)
		}
		if _, err := c.Write(buf); err != nil {
			b.Fatalf("Write: %v", err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatalf("ReadFull: %v", err)
		}
		c.Close()
	}
}

// BenchmarkThroughput measures client-to-backend throughput through the
// proxy on one connection.
func BenchmarkThroughput(b *testing.B) {
	const chunk = 256 << 10
	e := newEnv(b, dispatch.Options{})
	be := newBackend(b, sink)
	e.register(b, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
	c := e.mustDial(b, netip.AddrPortFrom(vip, 80))
	data := randomBytes(chunk, 3)
	b.SetBytes(chunk)
	b.ReportAllocs()
	var sent uint64
	for b.Loop() {
		if _, err := c.Write(data); err != nil {
			b.Fatalf("Write: %v", err)
		}
		sent += chunk
	}
	if err := c.CloseWrite(); err != nil {
		b.Fatalf("CloseWrite: %v", err)
	}
	var n [8]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		b.Fatalf("reading the backend's count: %v", err)
	}
	if got := binary.BigEndian.Uint64(n[:]); got != sent {
		b.Fatalf("backend received %d bytes, want %d", got, sent)
	}
}

// TestDrain: a member deregistered with a drain refuses new connections at
// once, while its established connection keeps flowing (the address is
// still held) until the registry ends the drain, which resets it.
func TestDrain(t *testing.T) {
	e := newEnv(t, dispatch.Options{})
	a := newBackend(t, echo)
	k := registry.Key{IP: netip.MustParseAddr("198.18.0.10")}
	e.register(t, registry.Registration{Name: "A", IP: k.IP, Backend: a.addr})
	c := e.mustDial(t, netip.AddrPortFrom(k.IP, 9000))
	echoOnce(t, c, "before")

	if err := e.reg.DeregisterDrain("A", k, time.Hour); err != nil {
		t.Fatalf("DeregisterDrain(A, %s, 1h): %v", k, err)
	}
	if nc, err := e.dial(netip.AddrPortFrom(k.IP, 9000)); err == nil {
		nc.Close()
		t.Fatalf("dial a draining member: nil error, want a refusal")
	}
	echoOnce(t, c, "draining, still flowing")
	if got := e.fwd.Conns(k, "A"); got != 1 {
		t.Errorf("Conns(%s, A) while draining = %d, want 1", k, got)
	}
	if got := e.reg.EndDrains(); got != 0 {
		t.Fatalf("EndDrains before the deadline = %d, want 0", got)
	}
	echoOnce(t, c, "still before the deadline")

	// Registering again cancels the drain; a 1 ms drain then runs out.
	e.register(t, registry.Registration{Name: "A", IP: k.IP, Backend: a.addr})
	if err := e.reg.DeregisterDrain("A", k, time.Millisecond); err != nil {
		t.Fatalf("DeregisterDrain(A, %s, 1ms): %v", k, err)
	}
	time.Sleep(5 * time.Millisecond)
	if got := e.reg.EndDrains(); got != 1 {
		t.Fatalf("EndDrains after the deadline = %d, want 1", got)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read after the drain ended = %v, want a reset", err)
	}
	e.waitConns(t, k, "A", 0)
	if got := e.st.Addrs(); len(got) != 0 {
		t.Errorf("stack addresses after the drain ended = %v, want none", got)
	}
}

// statsOf returns the counters of member name in binding k, keyed for
// comparison; ok is false when Stats has none.
func statsOf(f *dispatch.Forwarder, k registry.Key, name string) (dispatch.MemberStats, bool) {
	for _, s := range f.Stats() {
		if s.Binding == k && s.Member == name {
			return s, true
		}
	}
	return dispatch.MemberStats{}, false
}

// TestStats checks the per-member counters: accepted connections, bytes
// each way as the backend and the client saw them, refusals by reason,
// live connections, and that a member's counters go when it leaves.
func TestStats(t *testing.T) {
	e := newEnv(t, dispatch.Options{})
	be := newBackend(t, sink)
	mode1 := registry.Key{IP: vip}
	refusedKey := registry.Key{IP: netip.MustParseAddr("198.18.0.11")}
	standbyKey := registry.Key{IP: shared, Port: 8080}
	e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
	e.register(t, registry.Registration{Name: "gone", IP: refusedKey.IP, Backend: closedPort(t)})
	e.register(t, registry.Registration{Name: "sb", IP: shared, Port: 8080, Backend: be.addr, State: registry.Standby})

	sizes := []int{1, 1000, 100000}
	var sent uint64
	for i, n := range sizes {
		c := e.mustDial(t, netip.AddrPortFrom(vip, 80))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(randomBytes(n, uint64(i))); err != nil {
			t.Fatalf("Write(%d bytes): %v", n, err)
		}
		c.CloseWrite()
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("ReadAll after %d bytes: %v", n, err)
		}
		c.Close()
		sent += uint64(n)
	}
	e.waitConns(t, mode1, "srv", 0)
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(refusedKey.IP, 80), netip.AddrPortFrom(shared, 8080), netip.AddrPortFrom(shared, 9090)} {
		if c, err := e.dial(dst); err == nil {
			c.Close()
			t.Fatalf("DialContextTCP(%s) succeeded, want connection refused", dst)
		}
	}

	var (
		proxied = int(dispatch.Proxied)
		noRoute = int(dispatch.NoRoute)
		refused = int(dispatch.Refused)
	)
	tests := []struct {
		name   string
		key    registry.Key
		member string
		want   func(*dispatch.MemberStats)
	}{
		{"accepted and bytes", mode1, "srv", func(s *dispatch.MemberStats) {
			s.Outcomes[proxied] = uint64(len(sizes))
			s.BytesToBackend = sent
			s.BytesToClient = 8 * uint64(len(sizes)) // sink answers 8 bytes
		}},
		{"backend refused", refusedKey, "gone", func(s *dispatch.MemberStats) { s.Outcomes[refused] = 1 }},
		{"no active member", standbyKey, "", func(s *dispatch.MemberStats) { s.Outcomes[noRoute] = 1 }},
		{"no binding for the port", registry.Key{IP: shared}, "", func(s *dispatch.MemberStats) { s.Outcomes[noRoute] = 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := dispatch.MemberStats{Binding: tc.key, Member: tc.member}
			tc.want(&want)
			got, ok := statsOf(e.fwd, tc.key, tc.member)
			if !ok {
				t.Fatalf("Stats() has nothing for %s %q; want %+v", tc.key, tc.member, want)
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Stats() for %s %q (-want +got):\n%s", tc.key, tc.member, diff)
			}
		})
	}

	// A live connection is counted as active; a member that leaves takes
	// its counters with it.
	c := e.mustDial(t, netip.AddrPortFrom(vip, 80))
	e.waitConns(t, mode1, "srv", 1)
	if s, _ := statsOf(e.fwd, mode1, "srv"); s.Active != 1 {
		t.Errorf("Stats() for srv with one open connection: Active = %d, want 1", s.Active)
	}
	if err := e.reg.Deregister("srv", mode1); err != nil {
		t.Fatalf("Deregister(srv): %v", err)
	}
	c.Close()
	if s, ok := statsOf(e.fwd, mode1, "srv"); ok {
		t.Errorf("Stats() after srv left the table = %+v, want no entry", s)
	}
	if _, ok := statsOf(e.fwd, standbyKey, ""); !ok {
		t.Errorf("Stats() lost the refusals of %s, whose address is still held", standbyKey)
	}
}

// recordHandler is a slog.Handler at a fixed level that keeps the records
// it is handed.
type recordHandler struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// lines returns the records as "msg key=value ..." strings.
func (h *recordHandler) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.String())
			return true
		})
		out = append(out, b.String())
	}
	return out
}

// TestConnectionLog checks the per-connection lines: at debug level one
// when a connection is accepted and one when it closes, with its bytes;
// above debug none at all.
func TestConnectionLog(t *testing.T) {
	tests := []struct {
		name  string
		level slog.Level
		want  []string // substrings of the lines, in order
	}{
		{"debug", slog.LevelDebug, []string{
			"connection accepted client=198.18.0.1:",
			"connection closed client=198.18.0.1:",
		}},
		{"info", slog.LevelInfo, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &recordHandler{level: tc.level}
			e := newEnv(t, dispatch.Options{})
			e.fwd.Close() // replaced by one that logs to h
			fwd := dispatch.New(dispatch.Options{Table: e.reg, Logger: slog.New(h)})
			t.Cleanup(fwd.Close)
			e.st.HandleTCP(64, fwd.Handle)
			be := newBackend(t, sink)
			e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})

			c := e.mustDial(t, netip.AddrPortFrom(vip, 80))
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(make([]byte, 1234)); err != nil {
				t.Fatalf("Write: %v", err)
			}
			c.CloseWrite()
			if _, err := io.ReadAll(c); err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			c.Close()
			var lines []string
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if lines = h.lines(); len(lines) >= len(tc.want) && (len(tc.want) == 0 || fwd.Conns(registry.Key{IP: vip}, "srv") == 0) {
					break
				}
			}
			if tc.want == nil {
				fwd.Close() // every connection done: nothing more can be logged
				if lines := h.lines(); len(lines) != 0 {
					t.Errorf("logged at %v: %q, want nothing", tc.level, lines)
				}
				return
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("logged %q, want %d lines", lines, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %q, want it to contain %q", i, lines[i], w)
				}
			}
			for _, w := range []string{"binding=198.18.0.10:*", "member=srv", "backend=" + be.addr.String(), "bytes_to_backend=1234", "bytes_to_client=8", "duration="} {
				if !strings.Contains(lines[1], w) {
					t.Errorf("closed line %q, want it to contain %q", lines[1], w)
				}
			}
		})
	}
}

// TestRefusalLog checks that a refused SYN, whatever refused it, logs one
// debug line that says why and what became of it, and is counted once.
func TestRefusalLog(t *testing.T) {
	tests := []struct {
		name string
		// setup registers bindings (closing fwd for the closed case) and
		// returns the address to dial.
		setup       func(t *testing.T, e *env, fwd *dispatch.Forwarder) netip.AddrPort
		wantOutcome dispatch.Outcome
		want        []string // substrings of the one line
	}{
		{
			name: "no active member",
			setup: func(t *testing.T, e *env, _ *dispatch.Forwarder) netip.AddrPort {
				e.register(t, registry.Registration{Name: "srv", IP: shared, Port: 8080, Backend: netip.MustParseAddrPort("127.0.0.1:9"), State: registry.Standby})
				return netip.AddrPortFrom(shared, 8080)
			},
			wantOutcome: dispatch.NoRoute,
			want:        []string{"no active member ", "client=198.18.0.1:", "outcome=no_route", "binding=" + shared.String() + ":8080"},
		},
		{
			name: "backend refused",
			setup: func(t *testing.T, e *env, _ *dispatch.Forwarder) netip.AddrPort {
				e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: closedPort(t)})
				return netip.AddrPortFrom(vip, 80)
			},
			wantOutcome: dispatch.Refused,
			want:        []string{"backend dial failed ", "outcome=refused", "member=srv", "backend=127.0.0.1:", "err="},
		},
		{
			name: "forwarder closed",
			setup: func(t *testing.T, e *env, fwd *dispatch.Forwarder) netip.AddrPort {
				be := newBackend(t, echo)
				e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
				fwd.Close()
				return netip.AddrPortFrom(vip, 80)
			},
			wantOutcome: dispatch.NoRoute,
			want:        []string{"forwarder closed ", "outcome=no_route", "dst=" + vip.String() + ":80"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &recordHandler{level: slog.LevelDebug}
			e := newEnv(t, dispatch.Options{})
			e.fwd.Close() // replaced by one that logs to h
			fwd := dispatch.New(dispatch.Options{Table: e.reg, Logger: slog.New(h)})
			t.Cleanup(fwd.Close)
			e.st.HandleTCP(64, fwd.Handle)
			dst := tc.setup(t, e, fwd)
			if c, err := e.dial(dst); err == nil {
				c.Close()
				t.Fatalf("DialContextTCP(%s) succeeded, want connection refused", dst)
			}
			var lines []string
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(lines) == 0; time.Sleep(10 * time.Millisecond) {
				lines = h.lines()
			}
			fwd.Close() // every Handle done: nothing more can be logged
			lines = h.lines()
			if len(lines) != 1 {
				t.Fatalf("logged %q, want one line", lines)
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("line %q, want it to contain %q", lines[0], w)
				}
			}
			want := map[dispatch.Outcome]uint64{tc.wantOutcome: 1}
			if diff := cmp.Diff(want, nonZero(fwd.Outcomes())); diff != "" {
				t.Errorf("Outcomes() (-want +got):\n%s", diff)
			}
		})
	}
}

// reentrantConn is a backend connection whose Close calls back into the
// forwarder (onClose) before closing, as closing a real connection may
// wait on what the forwarder's own goroutines hold.
type reentrantConn struct {
	*net.TCPConn
	onClose func()
}

func (c *reentrantConn) Close() error {
	c.onClose()
	return c.TCPConn.Close()
}

// TestEndOutsideLock checks that Prune and Close end connections after
// releasing the forwarder's lock: a backend connection whose Close asks
// the forwarder for its Active count is closed without waiting on it.
func TestEndOutsideLock(t *testing.T) {
	tests := []struct {
		name string
		end  func(t *testing.T, e *env)
	}{
		{"Prune", func(t *testing.T, e *env) {
			if err := e.reg.Deregister("srv", registry.Key{IP: vip}); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
		}},
		{"Close", func(t *testing.T, e *env) { closeWithin(t, e.fwd, 5*time.Second) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				fwd     atomic.Pointer[dispatch.Forwarder]
				blocked atomic.Int32
			)
			onClose := func() {
				done := make(chan struct{})
				go func() { fwd.Load().Active(); close(done) }()
				select {
				case <-done:
				case <-time.After(2 * time.Second): // a deadlock, not a delay
					blocked.Add(1)
				}
			}
			var d net.Dialer
			e := newEnv(t, dispatch.Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &reentrantConn{TCPConn: c.(*net.TCPConn), onClose: onClose}, nil
			}})
			fwd.Store(e.fwd)
			be := newBackend(t, echo)
			e.register(t, registry.Registration{Name: "srv", IP: vip, Backend: be.addr})
			c := e.mustDial(t, netip.AddrPortFrom(vip, 80))
			defer c.Close()
			echoOnce(t, c, "open")

			tc.end(t, e)
			e.waitConns(t, registry.Key{IP: vip}, "srv", 0)
			if n := blocked.Load(); n != 0 {
				t.Errorf("%s: a backend connection's Close waited on the forwarder's lock (%d times), want it closed after the lock is released", tc.name, n)
			}
		})
	}
}

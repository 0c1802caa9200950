package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/gateway"
	"github.com/vipmux/vipmux/internal/leakcheck"
	"github.com/vipmux/vipmux/nic"
	"github.com/vipmux/vipmux/registry"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
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
	vip      = netip.MustParseAddr("198.18.0.10")  // a mode-1 address
	shared   = netip.MustParseAddr("198.18.0.100") // [shared] address
	shared2  = netip.MustParseAddr("198.18.0.101")
)

// baseConfig is the config file of every test gateway; the tests append
// to it. dad_probes = 0: nothing answers on the wire for a probe to wait
// for.
const baseConfig = `
[nic]
driver = "afpacket"
interface = "test0"
networks = ["198.18.0.0/24"]
[arp]
dad_probes = 0
`

// lockedBuffer is a bytes.Buffer for a logger that several goroutines use.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	closed bool
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Close records that the writer was closed.
func (l *lockedBuffer) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	return nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is a whole gateway on a gVisor channel endpoint, a gVisor client
// stack on another, frames pumped between the two, and the control API on
// an httptest server. Backends are kernel listeners on loopback.
type env struct {
	gw     *gateway.Gateway
	path   string // the config file
	api    *control.Client
	client *gstack.Stack
	log    *lockedBuffer
	level  *slog.LevelVar
	// pcap receives the front link's frames (Options.OpenCapture).
	pcap *lockedBuffer
	// runErr receives Run's result.
	runErr chan error
	// link is the gateway's front link.
	link *nic.Link
}

// scrape returns the value of the series named name (no labels) in GET
// /metrics on the control API, "" when it is absent.
func (e *env) scrape(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get(e.api.BaseURL + control.PathMetrics)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// newEnv builds and runs a gateway whose config file is baseConfig and
// extra, and checks in cleanup that it closes, Run returns nil and no
// goroutine is left.
func newEnv(t *testing.T, extra string) *env {
	t.Helper()
	leakcheck.Goroutines(t)
	return newEnvWith(t, extra, nil)
}

// newEnvWith is newEnv with the gateway options that set changes, and
// without the goroutine-leak check: the caller runs it first.
func newEnvWith(t *testing.T, extra string, set func(*gateway.Options)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{path: filepath.Join(dir, "vipmux.toml"), log: &lockedBuffer{}, pcap: &lockedBuffer{}, level: new(slog.LevelVar), runErr: make(chan error, 1)}
	e.write(t, extra)
	load := func() (*config.Config, error) {
		cfg, err := config.Load(e.path)
		if err != nil {
			return nil, err
		}
		return cfg, cfg.Validate()
	}
	cfg, err := load()
	if err != nil {
		t.Fatalf("load %s: %v", e.path, err)
	}
	log := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: e.level}))

	gwWire, clientWire := channel.New(512, 1500, gatewayMAC), channel.New(512, 1500, clientMAC)
	pumpCtx, stopPump := context.WithCancel(context.Background())
	var pumps sync.WaitGroup
	pumps.Go(func() { pump(pumpCtx, gwWire, clientWire) })
	pumps.Go(func() { pump(pumpCtx, clientWire, gwWire) })
	t.Cleanup(func() { stopPump(); pumps.Wait() })
	e.client = newClientStack(t, ethernet.New(clientWire))

	ctl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen for the control API: %v", err)
	}
	e.link = &nic.Link{Endpoint: ethernet.New(gwWire), Name: "test0", MAC: net.HardwareAddr(gatewayMAC), MTU: 1500}
	opts := gateway.Options{
		Control:     ctl,
		Config:      cfg,
		ConfigPath:  e.path,
		Load:        load,
		Link:        e.link,
		OpenCapture: func() (io.Writer, error) { return e.pcap, nil },
		Store:       &registry.FileStore{Path: filepath.Join(dir, "state.json")},
		Logger:      log,
		// The backends are kernel listeners on loopback.
		AllowLoopbackBackends: true,
		SetLog: func(l config.Log) {
			var lv slog.Level
			_ = lv.UnmarshalText([]byte(l.Level))
			e.level.Set(lv)
		},
	}
	if set != nil {
		set(&opts)
	}
	e.gw, err = gateway.New(opts)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	srv := httptest.NewServer(e.gw.Handler())
	e.api = &control.Client{BaseURL: srv.URL}
	go func() { e.runErr <- e.gw.Run(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := e.gw.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
		if err := <-e.runErr; err != nil {
			t.Errorf("Run() = %v after Close, want nil", err)
		}
	})
	return e
}

// write writes the config file: baseConfig, extra, and shared address
// 198.18.0.100 unless extra has a [shared] table.
func (e *env) write(t *testing.T, extra string) {
	t.Helper()
	if !strings.Contains(extra, "[shared]") {
		extra += "\n[shared]\naddress = \"198.18.0.100\"\n"
	}
	if err := os.WriteFile(e.path, []byte(baseConfig+extra), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pump moves every frame that src's stack sends to dst's stack until ctx
// is done: a wire between two channel endpoints.
func pump(ctx context.Context, src, dst *channel.Endpoint) {
	for {
		pkt := src.ReadContext(ctx)
		if pkt == nil {
			return
		}
		v := pkt.ToView()
		pkt.DecRef()
		in := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		dst.InjectInbound(0, in) // ethernet.Endpoint reads the type from the header
		in.DecRef()
	}
}

// newClientStack returns a plain gVisor stack at 198.18.0.1/24 on link.
func newClientStack(t testing.TB, link gstack.LinkEndpoint) *gstack.Stack {
	t.Helper()
	s := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
	})
	t.Cleanup(func() { s.Close(); s.Wait() })
	if err := s.CreateNIC(clientNIC, link); err != nil {
		t.Fatalf("client CreateNIC: %s", err)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(clientIP.As4()), PrefixLen: frontNet.Bits()},
	}
	if err := s.AddProtocolAddress(clientNIC, pa, gstack.AddressProperties{}); err != nil {
		t.Fatalf("client AddProtocolAddress(%s): %s", clientIP, err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: clientNIC}})
	return s
}

// dial connects the client stack to dst through the gateway.
func (e *env) dial(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, e.client, tcpip.FullAddress{NIC: clientNIC, Addr: tcpip.AddrFrom4(dst.Addr().As4()), Port: dst.Port()}, ipv4.ProtocolNumber)
}

// exchange connects to dst, reads the backend's name line, sends msg,
// half-closes and returns the name and what came back.
func (e *env) exchange(t *testing.T, dst netip.AddrPort, msg string) (name, echoed string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dial(ctx, dst)
	if err != nil {
		t.Fatalf("dial %s through the gateway: %v", dst, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	name, err = r.ReadString('\n')
	if err != nil {
		t.Fatalf("read the backend's name from %s: %v", dst, err)
	}
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write to %s: %v", dst, err)
	}
	c.CloseWrite()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read the echo from %s: %v", dst, err)
	}
	return strings.TrimSuffix(name, "\n"), string(b)
}

// namedEcho starts a kernel backend on ip (a loopback address) that says
// its name on a line, then echoes until EOF. Cleanup stops it.
func namedEcho(t *testing.T, ip, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func port(p int) *int { return &p }

func TestGatewayMode1(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	// Run serves the control API on the listener it was given.
	served := &control.Client{BaseURL: "http://" + e.gw.ControlAddr().String()}
	if st, err := served.Status(ctx); err != nil || st.Shared != shared.String() {
		t.Errorf("GET /v1/status on the control listener = %+v, %v; want shared %s", st, err, shared)
	}
	backend := namedEcho(t, "127.0.0.1", "web-a")
	if _, err := e.api.Register(ctx, control.RegisterRequest{Name: "web-a", IP: vip.String(), Backend: backend.String()}); err != nil {
		t.Fatalf("Register(web-a on %s): %v", vip, err)
	}
	if diff := cmp.Diff([]netip.Addr{vip, shared}, e.gw.Addrs(), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("stack addresses after Register (-want +got):\n%s", diff)
	}
	msg := strings.Repeat("vipmux ", 10000) // several segments each way
	for _, p := range []uint16{80, 8443} {  // mode 1: every port
		name, got := e.exchange(t, netip.AddrPortFrom(vip, p), msg)
		if name != "web-a" || got != msg {
			t.Errorf("exchange with %s:%d = %q and %d bytes, want web-a and the %d bytes sent back", vip, p, name, len(got), len(msg))
		}
	}

	// Deregistered: the address leaves the stack.
	if err := e.api.Deregister(ctx, control.DeregisterRequest{Name: "web-a", IP: vip.String()}); err != nil {
		t.Fatalf("Deregister(web-a): %v", err)
	}
	if diff := cmp.Diff([]netip.Addr{shared}, e.gw.Addrs(), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("stack addresses after Deregister (-want +got):\n%s", diff)
	}

	// Close flushes the capture and closes its writer: the bytes that
	// crossed the front link are in it.
	if err := e.gw.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e.pcap.mu.Lock()
	closed, captured := e.pcap.closed, bytes.Contains(e.pcap.b.Bytes(), []byte("vipmux vipmux"))
	e.pcap.mu.Unlock()
	if !closed || !captured {
		t.Errorf("after Close: capture writer closed %v, holds the proxied bytes %v; want both", closed, captured)
	}
}

func TestGatewayMode2Switch(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	a, b := namedEcho(t, "127.0.0.1", "web-a"), namedEcho(t, "127.0.0.2", "web-b")
	for _, r := range []control.RegisterRequest{
		{Name: "web-a", Port: port(8080), Backend: a.String(), State: "active"},
		{Name: "web-b", Port: port(8080), Backend: b.String(), State: "standby"},
	} {
		if _, err := e.api.Register(ctx, r); err != nil {
			t.Fatalf("Register(%s on the shared address): %v", r.Name, err)
		}
	}
	dst := netip.AddrPortFrom(shared, 8080)
	if name, got := e.exchange(t, dst, "one"); name != "web-a" || got != "one" {
		t.Errorf("exchange with %s before the switch = %q, %q; want web-a, one", dst, name, got)
	}
	if _, err := e.api.Switch(ctx, control.SwitchRequest{Port: port(8080), To: "web-b"}); err != nil {
		t.Fatalf("Switch(8080 to web-b): %v", err)
	}
	if name, got := e.exchange(t, dst, "two"); name != "web-b" || got != "two" {
		t.Errorf("exchange with %s after the switch = %q, %q; want web-b, two", dst, name, got)
	}
}

func TestGatewayLeaseExpiry(t *testing.T) {
	e := newEnv(t, "")
	backend := namedEcho(t, "127.0.0.1", "web-a")
	if _, err := e.api.Register(context.Background(), control.RegisterRequest{Name: "web-a", IP: vip.String(), Backend: backend.String(), TTL: "300ms"}); err != nil {
		t.Fatalf("Register(web-a, ttl 300ms): %v", err)
	}
	if name, _ := e.exchange(t, netip.AddrPortFrom(vip, 80), "x"); name != "web-a" {
		t.Fatalf("exchange while the lease runs: %q, want web-a", name)
	}
	// Run's expiry loop ends the lease and the address leaves the stack.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, bound := e.gw.Registry().Table().Binding(registry.Key{IP: vip})
		addrs := e.gw.Addrs()
		if !bound && len(addrs) == 1 && addrs[0] == shared {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after a 300ms lease: bound %v, stack addresses %v; want unbound, only %v", bound, addrs, shared)
		}
	}
	if log := e.log.String(); !strings.Contains(log, "lease expired") {
		t.Errorf("gateway log does not record the expiry:\n%s", log)
	}
}

func TestGatewayReload(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	reload := func(extra string) ([]string, error) {
		t.Helper()
		e.write(t, extra)
		return e.gw.Reread("test")
	}

	if changed, err := reload(""); err != nil || len(changed) != 0 {
		t.Errorf("Reread(unchanged) = %v, %v; want nothing, nil", changed, err)
	}

	// A bad file, and a fixed key next to a reloadable one: refused, with
	// the key and kind the API maps; nothing changes. Through Reread and
	// through POST /v1/reload.
	for _, tc := range []struct {
		name     string
		extra    string
		wantKind gateway.ReloadErrorKind
		wantIs   error
		wantKey  string
		wantCode int
	}{
		{"out of range", "[health]\nrise = 0\n[log]\nlevel = \"debug\"\n", gateway.ReloadInvalid, registry.ErrInvalid, "health.rise", 400},
		{"fixed key", "[dispatch]\nmax_in_flight = 1\n[log]\nlevel = \"debug\"\n", gateway.ReloadConflict, registry.ErrConflict, "dispatch.max_in_flight", 409},
		{"not TOML", "[log\n", gateway.ReloadInvalid, registry.ErrInvalid, "config", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reload(tc.extra)
			var re *gateway.ReloadError
			if !errors.As(err, &re) || re.Kind != tc.wantKind || re.Key != tc.wantKey || !errors.Is(err, tc.wantIs) {
				t.Errorf("Reread(%q) = %#v, want a %v ReloadError naming %s that is %v", tc.extra, err, tc.wantKind, tc.wantKey, tc.wantIs)
			}
			_, err = e.api.Reload(ctx)
			var ae *control.APIError
			if !errors.As(err, &ae) || ae.Code != tc.wantCode || (tc.wantKey != "config" && ae.Field != tc.wantKey) {
				t.Errorf("POST /v1/reload of %q = %v, want %d naming %s", tc.extra, err, tc.wantCode, tc.wantKey)
			}
		})
	}
	if e.level.Level() != slog.LevelInfo {
		t.Errorf("log level after refused reloads = %v, want INFO", e.level.Level())
	}
	if got := e.scrape(t, "vipmux_config_last_reload_successful"); got != "0" {
		t.Errorf("vipmux_config_last_reload_successful after refused reloads = %s, want 0", got)
	}

	// The shared address moves only while nobody is registered on it.
	a := namedEcho(t, "127.0.0.1", "web-a")
	if _, err := e.api.Register(ctx, control.RegisterRequest{Name: "web-a", Port: port(8080), Backend: a.String()}); err != nil {
		t.Fatal(err)
	}
	move := "[log]\nlevel = \"debug\"\n[shared]\naddress = \"198.18.0.101\"\n"
	_, err := reload(move)
	var re *gateway.ReloadError
	if !errors.As(err, &re) || re.Key != "shared.address" || !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "198.18.0.100:8080") {
		t.Errorf("Reread(move the shared address with a binding on it) = %v, want a conflict on shared.address naming 198.18.0.100:8080", err)
	}
	if e.gw.Shared() != shared || e.level.Level() != slog.LevelInfo {
		t.Errorf("after the refused move: shared %v, level %v; want %v, INFO (nothing applied)", e.gw.Shared(), e.level.Level(), shared)
	}
	if name, _ := e.exchange(t, netip.AddrPortFrom(shared, 8080), "x"); name != "web-a" {
		t.Errorf("exchange with the shared address after the refused move: %q, want web-a", name)
	}
	if err := e.api.Deregister(ctx, control.DeregisterRequest{Name: "web-a", Port: port(8080)}); err != nil {
		t.Fatal(err)
	}

	// Accepted, through the API: every change applies.
	e.write(t, move+"[dispatch]\ndial_timeout = \"1s\"\nidle_timeout = \"30s\"\nmax_connections = 100\n[health]\nfailback = true\n")
	res, err := e.api.Reload(ctx)
	if err != nil {
		t.Fatalf("POST /v1/reload: %v", err)
	}
	if diff := cmp.Diff([]string{"dispatch.dial_timeout", "dispatch.idle_timeout", "dispatch.max_connections", "health.failback", "log.level", "shared.address"}, res.Changed); diff != "" {
		t.Errorf("POST /v1/reload changed (-want +got):\n%s", diff)
	}
	if e.gw.Shared() != shared2 {
		t.Errorf("Shared() = %v, want %v", e.gw.Shared(), shared2)
	}
	st, err := e.api.Status(ctx)
	if err != nil || st.Shared != shared2.String() {
		t.Errorf("status shared = %q (%v), want %s", st.Shared, err, shared2)
	}
	if diff := cmp.Diff([]netip.Addr{shared2}, e.gw.Addrs(), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("stack addresses after the move (-want +got):\n%s", diff)
	}
	if e.level.Level() != slog.LevelDebug {
		t.Errorf("log level = %v, want DEBUG", e.level.Level())
	}
	if d := e.gw.DialTimeout(); d != time.Second {
		t.Errorf("forwarder's dial timeout = %v, want 1s", d)
	}
	if l := e.gw.DispatchLimits(); l.IdleTimeout != 30*time.Second || l.MaxConnections != 100 {
		t.Errorf("forwarder's limits after the reload: idle timeout %v, max connections %d; want 30s, 100", l.IdleTimeout, l.MaxConnections)
	}
	if got := e.scrape(t, "vipmux_config_last_reload_successful"); got != "1" {
		t.Errorf("vipmux_config_last_reload_successful after a reload = %s, want 1", got)
	}
	// The new shared address serves.
	b := namedEcho(t, "127.0.0.2", "web-b")
	if _, err := e.api.Register(ctx, control.RegisterRequest{Name: "web-b", Port: port(9090), Backend: b.String()}); err != nil {
		t.Fatal(err)
	}
	if name, _ := e.exchange(t, netip.AddrPortFrom(shared2, 9090), "x"); name != "web-b" {
		t.Errorf("exchange with the new shared address: %q, want web-b", name)
	}

	log := e.log.String()
	for _, want := range []string{
		`msg="reload refused: the configuration in force stays as it was" config=` + e.path + ` by=test err="config ` + e.path + `: health.rise: 0 is out of range: use 1..100"`,
		fmt.Sprintf(`msg="config reloaded" config=%s by=api changed="dispatch.dial_timeout: \"3s\" -> \"1s\"; dispatch.idle_timeout: \"1h0m0s\" -> \"30s\"; dispatch.max_connections: 0 -> 100; health.failback: false -> true; log.level: \"info\" -> \"debug\"; shared.address: 198.18.0.100 -> 198.18.0.101"`, e.path),
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}

	// Closed: no reload any more.
	if err := e.gw.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := e.gw.Reload(e.gw.Config()); !errors.Is(err, gateway.ErrClosed) {
		t.Errorf("Reload after Close = %v, want ErrClosed", err)
	}
}

// TestGatewayCloseWithPendingHandshakes closes the gateway while clients'
// handshakes wait for backend dials that the backend never answers: Close
// aborts the dials and returns, long before the 60 s dial timeout.
func TestGatewayCloseWithPendingHandshakes(t *testing.T) {
	e := newEnv(t, "[dispatch]\ndial_timeout = \"60s\"\n")
	backend := silentBackend(t, "127.0.0.3")
	if _, err := e.api.Register(context.Background(), control.RegisterRequest{Name: "web-a", IP: vip.String(), Backend: backend.String()}); err != nil {
		t.Fatalf("Register(web-a): %v", err)
	}
	const n = 3
	dialCtx, cancelDials := context.WithCancel(context.Background())
	defer cancelDials()
	errc := make(chan error, n)
	for range n {
		go func() {
			c, err := e.dial(dialCtx, netip.AddrPortFrom(vip, 80))
			if err == nil {
				c.Close()
			}
			errc <- err
		}()
	}
	// The gateway's dials are in flight: n kernel sockets in SYN-SENT to
	// the backend.
	for deadline := time.Now().Add(10 * time.Second); synSent(t, backend) < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dials to %s in SYN-SENT after 10 s", synSent(t, backend), n, backend)
		}
	}

	closed := make(chan error, 1)
	go func() { closed <- e.gw.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Close() still waiting 20 s after it was called, with dials of a 60 s timeout pending")
	}
	if got := synSent(t, backend); got != 0 {
		t.Errorf("after Close: %d dials to %s in SYN-SENT, want 0 (aborted)", got, backend)
	}
	if err := <-e.runErr; err != nil {
		t.Errorf("Run() = %v after Close, want nil", err)
	}
	e.runErr <- nil // for cleanup
	cancelDials()
	for range n {
		if err := <-errc; err == nil {
			t.Errorf("a client's dial through a closed gateway succeeded, want an error")
		}
	}
}

// silentBackend returns a listener on ip (loopback) that never accepts and
// whose accept queue is full, so that the kernel drops further SYNs: a
// dial to it hangs until its timeout.
func silentBackend(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	addr := netip.MustParseAddr(ip)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: addr.As4()}); err != nil {
		t.Fatalf("bind %s: %v", ip, err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	ap := netip.AddrPortFrom(addr, uint16(sa.(*syscall.SockaddrInet4).Port))
	// Fill the accept queue until a dial times out: from then on the
	// kernel drops SYNs to it.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", ap.String(), 300*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return ap
			}
			t.Fatalf("fill the accept queue of %s: %v", ap, err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 10 {
			t.Fatalf("the accept queue of %s (backlog 0) still takes connections after %d", ap, i+1)
		}
	}
}

// synSent counts the kernel's TCP sockets in SYN-SENT to dst, from
// /proc/net/tcp.
func synSent(t *testing.T, dst netip.AddrPort) int {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("read /proc/net/tcp: %v", err)
	}
	a := dst.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], dst.Port())
	n := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; st 02 is SYN_SENT.
		if len(f) > 3 && f[2] == want && f[3] == "02" {
			n++
		}
	}
	return n
}

package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/vipmux/vipmux/cluster"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/gateway"
	"github.com/vipmux/vipmux/internal/leakcheck"
	"go.etcd.io/etcd/server/v3/embed"
)

// startHoldersEtcd starts an embedded one-member etcd on 127.0.0.1 (heartbeat
// 50 ms, election 500 ms) and returns its client URL; it stops in cleanup.
func startHoldersEtcd(t *testing.T) string {
	t.Helper()
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Name = "test"
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.LogLevel = "error"
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", free())}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", free())}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatalf("embedded etcd not ready after 30s")
	}
	return client.String()
}

// TestGatewayClusterHolds builds a gateway with Options.Cluster: a registered
// address is held (the gateway is the only live one), answered and
// proxied through the fence; Close gives it up.
func TestGatewayClusterHolds(t *testing.T) {
	leakcheck.Goroutines(t) // before etcd: its cleanup stops etcd first
	ep := startHoldersEtcd(t)
	e := newEnvWith(t, "", func(o *gateway.Options) {
		o.Cluster = &cluster.Options{Endpoints: []string{ep}, Node: "gw-a", Lease: 2 * time.Second}
	})
	ctx := context.Background()
	backend := namedEcho(t, "127.0.0.1", "web-a")
	if _, err := e.api.Register(ctx, control.RegisterRequest{Name: "web-a", IP: vip.String(), Backend: backend.String()}); err != nil {
		t.Fatalf("Register(web-a on %s): %v", vip, err)
	}
	for end := time.Now().Add(30 * time.Second); !slices.Contains(e.gw.Addrs(), vip); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the stack does not hold %v 30s after Register: %v", vip, e.gw.Addrs())
		}
	}
	name, got := e.exchange(t, netip.AddrPortFrom(vip, 80), "hello")
	if name != "web-a" || got != "hello" {
		t.Errorf("exchange with %s:80 = %q, %q; want web-a, hello", vip, name, got)
	}
	if err := e.gw.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

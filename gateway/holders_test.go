package gateway_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vipmux/vipmux/cluster"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/gateway"
	"github.com/vipmux/vipmux/internal/etcdtest"
	"github.com/vipmux/vipmux/internal/leakcheck"
)

// startHoldersEtcd starts an embedded one-member etcd on 127.0.0.1 (heartbeat
// 50 ms, election 500 ms) and returns its client URL; it stops in cleanup.
func startHoldersEtcd(t *testing.T) string {
	t.Helper()
	return etcdtest.Start(t, etcdtest.Options{TickMs: 50, ElectionMs: 500, Sync: true}).URL
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

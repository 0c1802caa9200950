package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipmux/vipmux/internal/etcdtest"

	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/gateway"
	"github.com/vipmux/vipmux/nic"
	"github.com/vipmux/vipmux/registry"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
)

// startEtcd starts an embedded single-member etcd on loopback and returns
// its client URL. (The server is linked into the tests only: vipmux
// itself has the client alone.)
func startEtcd(t *testing.T) string {
	t.Helper()
	return startEtcdAt(t, etcdtest.FreeURL(t))
}

// startEtcdAt is startEtcd serving clients on client.
func startEtcdAt(t *testing.T, client url.URL) string {
	t.Helper()
	url := etcdtest.Start(t, etcdtest.Options{Client: &client}).URL
	// The server starts some of its goroutines after it is ready (its
	// listeners' muxes, its gateway, file purging).
	settle()
	return url
}

// settle waits until the number of goroutines has stopped changing: the
// embedded etcd's and a gateway's that start asynchronously are all up,
// so that the next gateway's leak check starts from a settled count.
func settle() {
	for n, stable := runtime.NumGoroutine(), 0; stable < 20; stable++ {
		time.Sleep(20 * time.Millisecond)
		if m := runtime.NumGoroutine(); m != n {
			n, stable = m, 0
		}
	}
}

func clusterConfig(endpoint, node string) string {
	return fmt.Sprintf("[cluster]\netcd = [%q]\nnode = %q\n", endpoint, node)
}

// TestGatewayCluster runs two gateways on one etcd: a registration
// through one is in its own table when the API answers (read your
// writes) and reaches the other's; exactly one of them holds the address
// in its stack (the cluster's holder) and proxies it; a conflicting
// registration through the other is refused against the shared table,
// and a deregistration through the other leaves both.
func TestGatewayCluster(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	a := newEnv(t, clusterConfig(ep, "gw-a"))
	// gw-a's Run serves its control listener once its background work
	// has started; then its etcd watch settles.
	if _, err := (&control.Client{BaseURL: "http://" + a.gw.ControlAddr().String()}).Status(ctx); err != nil {
		t.Fatalf("gw-a status: %v", err)
	}
	settle()
	b := newEnv(t, clusterConfig(ep, "gw-b"))
	backend := namedEcho(t, "127.0.0.1", "web-a")
	if _, err := a.api.Register(ctx, control.RegisterRequest{Name: "web-a", IP: vip.String(), Backend: backend.String()}); err != nil {
		t.Fatalf("Register(web-a on %s) through gw-a: %v", vip, err)
	}
	key := registry.Key{IP: vip}
	if _, ok := a.gw.Registry().Table().Binding(key); !ok {
		t.Fatalf("gw-a's table after its Register answered has no %s", key)
	}
	eventually(t, "gw-b's table has "+key.String(), func() bool { _, ok := b.gw.Registry().Table().Binding(key); return ok })
	// One holder: its stack holds the address, the other's does not.
	var holder *env
	eventually(t, "one gateway holds "+vip.String(), func() bool {
		inA, inB := slices.Contains(a.gw.Addrs(), vip), slices.Contains(b.gw.Addrs(), vip)
		switch {
		case inA && !inB:
			holder = a
		case inB && !inA:
			holder = b
		default:
			return false
		}
		return true
	})
	msg := strings.Repeat("cluster ", 1000)
	if name, got := holder.exchange(t, netip.AddrPortFrom(vip, 80), msg); name != "web-a" || got != msg {
		t.Errorf("exchange through the holder with %s:80 = %q and %d bytes, want web-a and the %d bytes sent back", vip, name, len(got), len(msg))
	}
	// A conflicting registration through the other gateway is refused
	// against the shared table.
	_, err := b.api.Register(ctx, control.RegisterRequest{Name: "web-z", IP: vip.String(), Backend: backend.String()})
	if err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("Register(web-z on %s, held by web-a) through gw-b = %v, want a 409", vip, err)
	}
	if err := b.api.Deregister(ctx, control.DeregisterRequest{Name: "web-a", IP: vip.String()}); err != nil {
		t.Fatalf("Deregister(web-a) through gw-b: %v", err)
	}
	if _, ok := b.gw.Registry().Table().Binding(key); ok {
		t.Errorf("gw-b's table still has %s after its Deregister answered", key)
	}
	eventually(t, "both stacks release "+vip.String(), func() bool {
		return !slices.Contains(a.gw.Addrs(), vip) && !slices.Contains(b.gw.Addrs(), vip)
	})
}

// TestGatewayClusterTLS checks that [cluster]'s TLS files are read by New,
// and a problem with one fails it naming its key, before anything opens.
func TestGatewayClusterTLS(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, extra, wantErr string
	}{
		{name: "missing CA", extra: `etcd_ca = "` + filepath.Join(dir, "none.pem") + `"`, wantErr: "cluster.etcd_ca: open"},
		{name: "CA without a certificate", extra: `etcd_ca = "` + junk + `"`, wantErr: "cluster.etcd_ca: " + junk + " holds no PEM certificate"},
		{name: "bad client pair", extra: `etcd_cert = "` + junk + `"` + "\netcd_key = \"" + junk + `"`, wantErr: "cluster.etcd_cert, cluster.etcd_key:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(baseConfig + clusterConfig("https://127.0.0.1:1", "gw-a") + tc.extra + "\n"))
			if err != nil {
				t.Fatalf("config.Parse: %v", err)
			}
			gw, err := gateway.New(gateway.Options{Config: cfg})
			if err == nil {
				gw.Close()
				t.Fatalf("gateway.New succeeded, want an error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("gateway.New error = %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestGatewayClusterWaitsForEtcd starts a gateway before its etcd: New
// logs that etcd is unreachable and keeps trying, and completes once etcd
// answers; cancelling Options.Context makes it give up.
func TestGatewayClusterWaitsForEtcd(t *testing.T) {
	newGateway := func(t *testing.T, ctx context.Context, endpoint string, log *lockedBuffer) (*gateway.Gateway, error) {
		// Runs on a goroutine of its own: errors are returned, not fatal.
		cfg, err := config.Parse([]byte(baseConfig + clusterConfig(endpoint, "gw-a")))
		if err != nil {
			return nil, fmt.Errorf("config.Parse: %w", err)
		}
		ctl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		return gateway.New(gateway.Options{
			Config:  cfg,
			Context: ctx,
			Control: ctl,
			Link:    &nic.Link{Endpoint: ethernet.New(channel.New(16, 1500, gatewayMAC)), Name: "test0", MAC: net.HardwareAddr(gatewayMAC), MTU: 1500},
			Logger:  slog.New(slog.NewTextHandler(log, nil)),
		})
	}
	const unreachable = "etcd unreachable: the gateway waits for the shared table before it starts; retrying"

	t.Run("etcd comes up", func(t *testing.T) {
		client := etcdtest.FreeURL(t)
		log := &lockedBuffer{}
		type result struct {
			gw  *gateway.Gateway
			err error
		}
		done := make(chan result, 1)
		go func() {
			gw, err := newGateway(t, context.Background(), client.String(), log)
			done <- result{gw, err}
		}()
		eventually(t, "New logging that etcd is unreachable", func() bool { return strings.Contains(log.String(), unreachable) })
		startEtcdAt(t, client)
		r := <-done
		if r.err != nil {
			t.Fatalf("gateway.New after etcd came up: %v", r.err)
		}
		if err := r.gw.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Run("given up", func(t *testing.T) {
		log := &lockedBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		u := etcdtest.FreeURL(t)
		go func() {
			gw, err := newGateway(t, ctx, u.String(), log)
			if err == nil {
				gw.Close()
			}
			done <- err
		}()
		eventually(t, "New logging that etcd is unreachable", func() bool { return strings.Contains(log.String(), unreachable) })
		cancel()
		err := <-done
		if err == nil || !strings.Contains(err.Error(), "cluster.etcd") || !errors.Is(err, context.Canceled) {
			t.Errorf("gateway.New with its context cancelled = %v, want an error naming cluster.etcd and wrapping context.Canceled", err)
		}
	})
}

// eventually polls cond until it holds, failing the test after 20s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: still not %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

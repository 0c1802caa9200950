package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vipmux/vipmux/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vipmux/vipmux/registry"
)

// startEtcd starts an embedded single-member etcd on loopback with short
// raft timers (its minimum lease TTL is then 1s), and returns a client.
//
// With VIPMUX_ETCD_BIN set (e.g. to Debian etcd-server's /usr/bin/etcd),
// it runs that binary instead, with heartbeat 50 ms and election 500 ms:
// the server that the e2e tests and a Debian cluster use (etcd 3.4).
func startEtcd(t testing.TB) *clientv3.Client {
	t.Helper()
	if bin := os.Getenv("VIPMUX_ETCD_BIN"); bin != "" {
		return startEtcdBinary(t, bin)
	}
	cli, _ := startEmbedded(t)
	return cli
}

// startEmbedded starts the embedded etcd and returns a client and a
// function that restarts the server (same data, same addresses).
func startEmbedded(t testing.TB) (*clientv3.Client, func()) {
	t.Helper()
	srv := etcdtest.Start(t, etcdtest.Options{})
	return newClient(t, srv.URL), srv.Restart
}

// startEtcdBinary runs the etcd server binary bin on loopback.
func startEtcdBinary(t testing.TB, bin string) *clientv3.Client {
	t.Helper()
	peer, client := etcdtest.FreeURL(t), etcdtest.FreeURL(t)
	cmd := exec.Command(bin,
		"--name", "test", "--data-dir", t.TempDir(),
		"--listen-client-urls", client.String(), "--advertise-client-urls", client.String(),
		"--listen-peer-urls", peer.String(), "--initial-advertise-peer-urls", peer.String(),
		"--initial-cluster", "test="+peer.String(),
		"--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", bin, out.String())
		}
	})
	cli := newClient(t, client.String())
	eventually(t, bin+" answering", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "health")
		return err == nil
	})
	return cli
}

func newClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("clientv3.New(%s): %v", endpoint, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// gateway is one registry on the shared table, as gateway.New wires it.
type gateway struct {
	st     *Store
	reg    *registry.Registry
	cancel context.CancelFunc
	done   chan struct{}
}

// newGateway opens a store on a client of its own to etcd, and runs its
// watch (and, with expiry, the registry's lease expiry) until the test
// ends or stop is called.
func newGateway(t testing.TB, endpoint string, expiry bool) *gateway {
	t.Helper()
	cli := newClient(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Open(ctx, Options{Client: cli})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	reg, err := registry.New(registry.Options{Store: st})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	g := &gateway{st: st, reg: reg}
	g.run(t, expiry)
	return g
}

func (g *gateway) run(t testing.TB, expiry bool) {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.st.Run(ctx, g.reg) })
	if expiry {
		wg.Go(func() { _ = g.reg.RunExpiry(ctx, 20*time.Millisecond) })
	}
	go func() { wg.Wait(); close(g.done) }()
	t.Cleanup(g.stop)
}

func (g *gateway) stop() {
	g.cancel()
	<-g.done
}

func endpointOf(cli *clientv3.Client) string { return cli.Endpoints()[0] }

// waitRev waits until every gateway's view is at etcd's current
// revision.
func waitRev(t testing.TB, cli *clientv3.Client, gws ...*gateway) {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/vipmux/table/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	want := resp.Header.Revision
	for _, g := range gws {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		g.st.catchUp(ctx, want)
		cancel()
		eventually(t, fmt.Sprintf("view at revision >= %d", want), func() bool { return g.reg.Revision() >= want })
	}
}

// eventually polls cond until it holds, failing the test after 20s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: still not %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	be   = netip.MustParseAddrPort("198.19.0.10:8080")
	ipOf = func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}) }
)

// cmpOpts compares netip values, which have unexported fields, with ==.
var cmpOpts = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{})

// tableOf is a table's bindings, for comparison.
func tableOf(r *registry.Registry) []registry.Binding {
	var out []registry.Binding
	for _, b := range r.Table().Bindings() {
		out = append(out, *b)
	}
	return out
}

// TestNoLostUpdate registers members on the same bindings, and switches
// their active member, concurrently through two gateways: without the
// compare-and-swap, two read-modify-writes of one binding would drop one
// of the two members. Every acknowledged registration must be in both
// tables at the end, and the tables must be identical.
func TestNoLostUpdate(t *testing.T) {
	cli := startEtcd(t)
	a, b := newGateway(t, endpointOf(cli), false), newGateway(t, endpointOf(cli), false)
	const (
		keys    = 3
		perGW   = 12
		workers = 4
	)
	type reg struct {
		key  registry.Key
		name string
	}
	var (
		mu    sync.Mutex
		acked []reg
		errs  []error
	)
	// Another writer bumps etcd's revision with keys outside the table,
	// as the cluster's holders do: a retry must not wait for a revision
	// that the table's watch never reports.
	stopOther := make(chan struct{})
	var other sync.WaitGroup
	other.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopOther:
				return
			default:
			}
			if _, err := cli.Put(context.Background(), "/vipmux/holders/x", fmt.Sprint(i)); err != nil {
				t.Errorf("Put: %v", err)
				return
			}
		}
	})
	var wg sync.WaitGroup
	for gi, g := range []*gateway{a, b} {
		for w := range workers {
			wg.Go(func() {
				for i := w; i < perGW; i += workers {
					k := registry.Key{IP: ipOf(i % keys), Port: 80}
					name := fmt.Sprintf("gw%d-m%d", gi, i)
					_, err := g.reg.Register(registry.Registration{Name: name, IP: k.IP, Port: k.Port, Backend: be, State: registry.Standby})
					if err == nil && i%3 == 0 {
						_, err = g.reg.Switch(k, name)
					}
					mu.Lock()
					switch {
					case err == nil:
						acked = append(acked, reg{k, name})
					case errors.Is(err, registry.ErrConflict):
						// 409 after RemoteTries: allowed, not acknowledged.
					default:
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(stopOther)
	other.Wait()
	for _, err := range errs {
		t.Errorf("Register/Switch: %v", err)
	}
	if len(acked) == 0 {
		t.Fatal("no registration was acknowledged")
	}
	waitRev(t, cli, a, b)
	if diff := cmp.Diff(tableOf(a.reg), tableOf(b.reg), cmpOpts); diff != "" {
		t.Errorf("tables of the two gateways differ (-a +b):\n%s", diff)
	}
	for _, g := range []*gateway{a, b} {
		for _, r := range acked {
			bd, ok := g.reg.Table().Binding(r.key)
			if !ok || !bd.Has(r.name) {
				t.Errorf("acknowledged registration of %s on %s is missing from a table", r.name, r.key)
			}
		}
		for _, bd := range g.reg.Table().Bindings() {
			n := 0
			for _, m := range bd.Members {
				if m.State == registry.Active {
					n++
				}
			}
			if n > 1 {
				t.Errorf("binding %s has %d active members, want at most 1", bd.Key, n)
			}
		}
	}
	// A fresh gateway lists the same table.
	c := newGateway(t, endpointOf(cli), false)
	if diff := cmp.Diff(tableOf(a.reg), tableOf(c.reg), cmpOpts); diff != "" {
		t.Errorf("a fresh gateway's table differs (-a +fresh):\n%s", diff)
	}
}

// TestCommitStale checks the compare-and-swap itself: an edit computed
// against a revision older than the binding's last change is refused
// with registry.ErrStale, and changes nothing.
func TestCommitStale(t *testing.T) {
	cli := startEtcd(t)
	a := newGateway(t, endpointOf(cli), false)
	k := registry.Key{IP: ipOf(0), Port: 80}
	if _, err := a.reg.Register(registry.Registration{Name: "web-a", IP: k.IP, Port: k.Port, Backend: be}); err != nil {
		t.Fatal(err)
	}
	old := a.reg.Revision()
	first, _ := a.reg.Table().Binding(k)
	if _, err := a.reg.Register(registry.Registration{Name: "web-b", IP: k.IP, Port: k.Port, Backend: be}); err != nil {
		t.Fatal(err)
	}
	stale := &registry.Binding{Key: k, Members: append(append([]registry.Member(nil), first.Members...), registry.Member{Name: "web-c", Backend: be, State: registry.Standby})}
	tests := []struct {
		name    string
		rev     int64
		edit    registry.Edit
		wantErr error
	}{
		{name: "update from before the last change", rev: old, edit: registry.Edit{Key: k, Old: first, New: stale}, wantErr: registry.ErrStale},
		{name: "create of a binding that exists", rev: a.reg.Revision(), edit: registry.Edit{Key: k, New: stale}, wantErr: registry.ErrStale},
		{name: "delete from before the last change", rev: old, edit: registry.Edit{Key: k, Old: first}, wantErr: registry.ErrStale},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The newest revision is another key's (a holder's), which
			// the table's watch does not report: the refused Commit
			// still returns only once the view is at it, so that the
			// registry's retry does not wait for it in vain.
			if _, err := cli.Put(context.Background(), "/vipmux/holders/x", tc.name); err != nil {
				t.Fatal(err)
			}
			before := a.st.Revision()
			at, err := a.st.Commit(tc.rev, []registry.Edit{tc.edit})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Commit(rev %d) error = %v, want %v", tc.rev, err, tc.wantErr)
			}
			if got := a.st.Revision(); got < at {
				t.Errorf("after a refused Commit the view is at revision %d, want at least %d (the revision it returned)", got, at)
			}
			before = max(before, at)
			resp, err := cli.Get(context.Background(), a.st.bindingKey(k))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Header.Revision != before || len(resp.Kvs) != 1 {
				t.Errorf("after a refused Commit: revision %d (want %d), %d keys (want 1)", resp.Header.Revision, before, len(resp.Kvs))
			}
		})
	}
	bd, _ := a.reg.Table().Binding(k)
	if got := len(bd.Members); got != 2 {
		t.Errorf("binding %s has %d members after the refused commits, want 2", k, got)
	}
}

// TestReadYourWrites checks that a write answers only once this
// gateway's own view holds it, through either gateway.
func TestReadYourWrites(t *testing.T) {
	cli := startEtcd(t)
	a, b := newGateway(t, endpointOf(cli), false), newGateway(t, endpointOf(cli), false)
	for i := range 20 {
		g := []*gateway{a, b}[i%2]
		k := registry.Key{IP: ipOf(i), Port: 0}
		if _, err := g.reg.Register(registry.Registration{Name: fmt.Sprintf("srv-%d", i), IP: k.IP, Backend: be}); err != nil {
			t.Fatalf("Register %d: %v", i, err)
		}
		if _, ok := g.reg.Table().Binding(k); !ok {
			t.Fatalf("Register %s returned, but the same gateway's Table lacks it", k)
		}
		if m, _, ok := g.reg.Lookup(k.IP, 443); !ok || m.Name != fmt.Sprintf("srv-%d", i) {
			t.Fatalf("Lookup(%s) after Register = %v, %v; want srv-%d", k.IP, m.Name, ok, i)
		}
		if err := g.reg.Deregister(fmt.Sprintf("srv-%d", i), k); err != nil {
			t.Fatalf("Deregister %d: %v", i, err)
		}
		if _, ok := g.reg.Table().Binding(k); ok {
			t.Fatalf("Deregister %s returned, but the same gateway's Table still has it", k)
		}
	}
}

// TestCompaction stops a gateway's watch, changes the table through
// another, compacts etcd past the stopped watch's revision, and restarts
// the watch: it must list again and catch up.
func TestCompaction(t *testing.T) {
	cli := startEtcd(t)
	a, b := newGateway(t, endpointOf(cli), false), newGateway(t, endpointOf(cli), false)
	k0 := registry.Key{IP: ipOf(0), Port: 80}
	if _, err := a.reg.Register(registry.Registration{Name: "web-a", IP: k0.IP, Port: k0.Port, Backend: be}); err != nil {
		t.Fatal(err)
	}
	waitRev(t, cli, a, b)
	a.stop()
	for i := 1; i < 5; i++ {
		if _, err := b.reg.Register(registry.Registration{Name: "web-b", IP: ipOf(i), Port: 80, Backend: be}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.reg.Deregister("web-a", k0); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Compact(context.Background(), b.reg.Revision())
	if err != nil {
		t.Fatalf("Compact: %v", err)
	}
	_ = resp
	if a.st.Revision() >= b.reg.Revision() {
		t.Fatalf("stopped watch at revision %d, compacted at %d: the test compacts nothing it needs", a.st.Revision(), b.reg.Revision())
	}
	a.run(t, false)
	// Not waitRev: a progress notification may run ahead of a watch
	// that is catching up (etcd before 3.4.24), and this one must list
	// again first.
	eventually(t, "the restarted gateway's table equal to the other's, without the binding deregistered in the gap", func() bool {
		_, has0 := a.reg.Table().Binding(k0)
		return !has0 && cmp.Equal(tableOf(b.reg), tableOf(a.reg), cmpOpts)
	})
	// The watch runs again: a new change arrives.
	k9 := registry.Key{IP: ipOf(9), Port: 80}
	if _, err := b.reg.Register(registry.Registration{Name: "web-c", IP: k9.IP, Port: k9.Port, Backend: be}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the change after the relist seen by the relisted gateway", func() bool {
		_, ok := a.reg.Table().Binding(k9)
		return ok
	})
}

// TestMemberLease registers leased members through one gateway, renews
// them through the other, and lets them lapse: the etcd lease ends, and
// both gateways see the mode-2 member down and its standby promoted, and
// the mode-1 member removed.
func TestMemberLease(t *testing.T) {
	cli := startEtcd(t)
	a, b := newGateway(t, endpointOf(cli), true), newGateway(t, endpointOf(cli), true)
	k2 := registry.Key{IP: ipOf(0), Port: 80}
	k1 := registry.Key{IP: ipOf(1)}
	regs := []registry.Registration{
		{Name: "web-a", IP: k2.IP, Port: k2.Port, Backend: be, TTL: time.Second},
		{Name: "web-b", IP: k2.IP, Port: k2.Port, Backend: be},
		{Name: "srv", IP: k1.IP, Backend: be, TTL: time.Second},
	}
	for _, r := range regs {
		if _, err := a.reg.Register(r); err != nil {
			t.Fatalf("Register %s: %v", r.Name, err)
		}
	}
	lk := a.st.leaseKey(k2, "web-a")
	resp, err := cli.Get(context.Background(), lk)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("lease key %s: %v, %v; want one key on an etcd lease", lk, resp, err)
	}
	waitRev(t, cli, b)
	// Renewals through the other gateway keep the members up for three
	// times their TTL.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		for _, r := range []registry.Registration{regs[0], regs[2]} {
			if _, err := b.reg.Renew(r.Name, registry.Key{IP: r.IP, Port: r.Port}); err != nil {
				t.Fatalf("Renew %s through the other gateway: %v", r.Name, err)
			}
		}
	}
	for _, g := range []*gateway{a, b} {
		bd, _ := g.reg.Table().Binding(k2)
		if m, _ := bd.Member("web-a"); m.Down {
			t.Fatalf("web-a is down although renewed: %+v", m)
		}
		if _, ok := g.reg.Table().Binding(k1); !ok {
			t.Fatalf("mode-1 binding %s gone although renewed", k1)
		}
	}
	// No more renewals: etcd ends the leases.
	for i, g := range []*gateway{a, b} {
		eventually(t, fmt.Sprintf("gateway %d: web-a down by its lease and web-b active, %s removed", i, k1), func() bool {
			bd, ok := g.reg.Table().Binding(k2)
			if !ok {
				return false
			}
			ma, _ := bd.Member("web-a")
			mb, _ := bd.Member("web-b")
			_, has1 := g.reg.Table().Binding(k1)
			return ma.Down && ma.DownCause == registry.DownLease && mb.State == registry.Active && !has1
		})
	}
	// A renewal brings the member up again, through either gateway, with
	// a new etcd lease.
	if _, err := b.reg.Renew("web-a", k2); err != nil {
		t.Fatalf("Renew after expiry: %v", err)
	}
	bd, _ := b.reg.Table().Binding(k2)
	if m, _ := bd.Member("web-a"); m.Down {
		t.Errorf("web-a still down after a renewal: %+v", m)
	}
	resp, err = cli.Get(context.Background(), lk)
	if err != nil || len(resp.Kvs) != 1 {
		t.Errorf("lease key %s after a renewal: %v, %v; want it back", lk, resp, err)
	}
}

// TestEtcdRestart restarts etcd under two gateways: their watches break,
// and they list and watch again: a change made through one after the
// restart reaches the other.
func TestEtcdRestart(t *testing.T) {
	cli, restart := startEmbedded(t)
	a, b := newGateway(t, endpointOf(cli), false), newGateway(t, endpointOf(cli), false)
	k0, k1 := registry.Key{IP: ipOf(0), Port: 80}, registry.Key{IP: ipOf(1), Port: 80}
	if _, err := a.reg.Register(registry.Registration{Name: "web-a", IP: k0.IP, Port: k0.Port, Backend: be}); err != nil {
		t.Fatal(err)
	}
	restart()
	// The clients reconnect on their own; a write may fail while they do.
	eventually(t, "a registration through gw-b after the restart", func() bool {
		_, err := b.reg.Register(registry.Registration{Name: "web-b", IP: k1.IP, Port: k1.Port, Backend: be})
		return err == nil
	})
	eventually(t, "gw-a seeing the registration made through gw-b after the restart", func() bool {
		_, ok := a.reg.Table().Binding(k1)
		return ok
	})
	if err := a.reg.Deregister("web-a", k0); err != nil {
		t.Fatalf("Deregister through gw-a after the restart: %v", err)
	}
	eventually(t, "gw-b seeing the deregistration made through gw-a", func() bool {
		_, ok := b.reg.Table().Binding(k0)
		return !ok
	})
}

func TestParseKey(t *testing.T) {
	s := &Store{prefix: DefaultPrefix + "table/"}
	k6 := registry.Key{IP: netip.MustParseAddr("2001:db8::1"), Port: 443}
	tests := []struct {
		key       string
		wantKey   registry.Key
		wantName  string
		wantLease bool
		wantErr   bool
	}{
		{key: s.bindingKey(k6), wantKey: k6},
		{key: s.leaseKey(k6, "web-a"), wantKey: k6, wantName: "web-a", wantLease: true},
		{key: s.bindingKey(registry.Key{IP: ipOf(0)}), wantKey: registry.Key{IP: ipOf(0)}},
		{key: "/vipmux/holders/x", wantErr: true},
		{key: "/vipmux/table/b/1.2.3.4", wantErr: true},
		{key: "/vipmux/table/b/1.2.3.4/70000", wantErr: true},
		{key: "/vipmux/table/l/1.2.3.4/80/", wantErr: true},
		{key: "/vipmux/table/x/1.2.3.4/80", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			k, name, lease, err := s.parseKey(tc.key)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseKey(%q) error = %v, want error %v", tc.key, err, tc.wantErr)
			}
			if err == nil && (k != tc.wantKey || name != tc.wantName || lease != tc.wantLease) {
				t.Errorf("parseKey(%q) = %v, %q, %v; want %v, %q, %v", tc.key, k, name, lease, tc.wantKey, tc.wantName, tc.wantLease)
			}
		})
	}
}

package cluster_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipmux/vipmux/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const waitLimit = 30 * time.Second

// exactlyOnce reports whether every address of table is held by exactly
// one of gws, both in the cluster's Held and in its stack.
func exactlyOnce(table map[netip.Addr]struct{}, gws ...*gw) bool {
	for a := range table {
		n := 0
		for _, g := range gws {
			_, held := g.Held()[a]
			if held != g.st.holding()[a] {
				return false // the stack has not followed yet
			}
			if held {
				n++
			}
		}
		if n != 1 {
			return false
		}
	}
	return true
}

func TestNewOptionErrors(t *testing.T) {
	table := staticTable(1)
	good := cluster.Options{Endpoints: []string{"http://127.0.0.1:1"}, Node: "gw-a", Lease: 3 * time.Second, TableAddrs: table, Logger: discardLogger()}
	tests := []struct {
		name      string
		set       func(*cluster.Options)
		wantField string
	}{
		{"no endpoints", func(o *cluster.Options) { o.Endpoints = nil }, "Endpoints"},
		{"no node", func(o *cluster.Options) { o.Node = "" }, "Node"},
		{"lease too short", func(o *cluster.Options) { o.Lease = 500 * time.Millisecond }, "Lease"},
		{"lease too long", func(o *cluster.Options) { o.Lease = 2 * time.Minute }, "Lease"},
		{"placement", func(o *cluster.Options) { o.Placement = "random" }, "Placement"},
		{"on_etcd_loss", func(o *cluster.Options) { o.OnEtcdLoss = "ignore" }, "OnEtcdLoss"},
		{"weight", func(o *cluster.Options) { o.Weight = -1 }, "Weight"},
		{"no table", func(o *cluster.Options) { o.TableAddrs = nil }, "TableAddrs"},
		{"good", func(*cluster.Options) {}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.set(&o)
			c, err := cluster.New(o)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("New(%+v) = %v, want no error", o, err)
				}
				if c.Open() {
					t.Errorf("Open() before any lease = true, want false")
				}
				return
			}
			if !errors.Is(err, cluster.ErrOptions) || !strings.Contains(err.Error(), tc.wantField+":") {
				t.Fatalf("New = %v, want an ErrOptions naming %s", err, tc.wantField)
			}
		})
	}
}

// TestClaimExclusive checks the holder transaction: of many gateways that
// claim one unheld address at the same moment, exactly one wins.
func TestClaimExclusive(t *testing.T) {
	ep := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	defer cli.Close()
	const n = 8
	var wg sync.WaitGroup
	won := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		g, err := cli.Grant(context.Background(), 5)
		if err != nil {
			t.Fatalf("Grant: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			won[i], errs[i] = cluster.ClaimKey(context.Background(), cli, "/vipmux/cluster/holders/198.18.1.1", "gw", g.ID, 5*time.Second)
		}()
	}
	wg.Wait()
	winners := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("claim %d: %v", i, errs[i])
		}
		if won[i] {
			winners++
		}
	}
	if winners != 1 {
		t.Errorf("%d of %d concurrent claims won, want exactly 1", winners, n)
	}
}

// TestSpreadStickyRebalance checks that two gateways spread a table
// between them, each address held once; that a third one joining takes
// none; and that a rebalance moves addresses to their preferred holders.
func TestSpreadStickyRebalance(t *testing.T) {
	ep := startEtcd(t)
	// The table appears once both gateways see each other, so that both
	// place it over the same two nodes.
	full := staticTable(40)
	var shown atomic.Bool
	table := func() map[netip.Addr]struct{} {
		if shown.Load() {
			return full()
		}
		return nil
	}
	a := startGateway(t, "gw-a", ep, table, nil)
	b := startGateway(t, "gw-b", ep, table, nil)
	waitFor(t, "gw-a and gw-b see each other", waitLimit, func() bool { return a.ViewNodes() == 2 && b.ViewNodes() == 2 })
	shown.Store(true)
	a.TableChanged()
	b.TableChanged()
	waitFor(t, "40 addresses held once each by gw-a and gw-b", waitLimit, func() bool { return exactlyOnce(table(), a, b) })
	if len(a.Held()) == 0 || len(b.Held()) == 0 {
		t.Fatalf("spread: gw-a holds %d, gw-b %d; want both some", len(a.Held()), len(b.Held()))
	}
	heldA, heldB := len(a.Held()), len(b.Held())

	c := startGateway(t, "gw-c", ep, table, nil)
	dumpLogs(t, a, b, c)
	waitFor(t, "gw-c sees every holder and itself", waitLimit, func() bool {
		for ip := range table() {
			if _, ok := c.Holder(ip); !ok {
				return false
			}
		}
		st, err := c.Status(context.Background())
		return err == nil && len(st) == 3
	})
	// gw-c has run its placement on a full view: nothing was free.
	if got := len(c.Held()); got != 0 {
		t.Errorf("joining gw-c holds %d addresses, want 0 (sticky)", got)
	}
	if len(a.Held()) != heldA || len(b.Held()) != heldB {
		t.Errorf("after gw-c joined: gw-a holds %d (was %d), gw-b %d (was %d); want unchanged", len(a.Held()), heldA, len(b.Held()), heldB)
	}

	if err := c.Rebalance(context.Background()); err != nil {
		t.Fatalf("Rebalance: %v", err)
	}
	nodes := []cluster.Node{{Name: "gw-a"}, {Name: "gw-b"}, {Name: "gw-c"}}
	byName := map[string]*gw{"gw-a": a, "gw-b": b, "gw-c": c}
	waitFor(t, "every address on its preferred holder after the rebalance", waitLimit, func() bool {
		if !exactlyOnce(table(), a, b, c) {
			return false
		}
		for ip := range table() {
			if _, ok := byName[cluster.Rank(ip, nodes, cluster.PlacementSpread)[0].Name].Held()[ip]; !ok {
				return false
			}
		}
		return true
	})
	if len(c.Held()) == 0 {
		t.Errorf("gw-c holds nothing after the rebalance")
	}
}

// TestTakeoverFence cuts gw-a off from etcd (an in-process proxy between
// it and etcd): gw-b takes its addresses when its lease ends, and at the
// moment gw-b's stack takes each one, gw-a's fence has already shut. gw-b
// announces them again later. Healed, gw-a joins again and takes nothing
// back.
func TestTakeoverFence(t *testing.T) {
	ep := startEtcd(t)
	px := startProxy(t, ep)
	table := staticTable(20)
	// gw-a, alone at first, holds every address; gw-b joining takes none.
	a := startGateway(t, "gw-a", px.url(), table, nil)
	waitFor(t, "gw-a holds every address", waitLimit, func() bool { return exactlyOnce(table(), a) })
	b := startGateway(t, "gw-b", ep, table, nil)
	dumpLogs(t, a, b)
	waitFor(t, "20 addresses held once each", waitLimit, func() bool { return exactlyOnce(table(), a, b) })
	if len(a.Held()) == 0 {
		t.Fatalf("gw-a holds nothing; the test needs it to hold some")
	}
	fromA := a.Held()
	if !a.Open() {
		t.Fatalf("gw-a's fence is shut while it reaches etcd")
	}

	var mu sync.Mutex
	var openAtTakeover []netip.Addr
	b.st.mu.Lock()
	b.st.onAdd = func(added []netip.Addr) {
		if a.Open() {
			mu.Lock()
			openAtTakeover = append(openAtTakeover, added...)
			mu.Unlock()
		}
	}
	b.st.mu.Unlock()

	px.cutOff()
	waitFor(t, "gw-b holds every address", waitLimit, func() bool { return len(b.st.holding()) == len(table()) })
	mu.Lock()
	if len(openAtTakeover) > 0 {
		t.Errorf("gw-b took %v while gw-a's fence was still open (two answers)", openAtTakeover)
	}
	mu.Unlock()
	if a.Open() {
		t.Errorf("gw-a's fence is open while it is cut off from etcd")
	}
	waitFor(t, "gw-a's stack lets go", waitLimit, func() bool { return len(a.st.holding()) == 0 })
	waitFor(t, "gw-b announces the taken addresses again", waitLimit, func() bool {
		b.st.mu.Lock()
		defer b.st.mu.Unlock()
		for ip := range fromA {
			if b.st.reannounced[ip] == 0 {
				return false
			}
		}
		return true
	})
	if !strings.Contains(a.log.String(), "fenced") {
		t.Errorf("gw-a's log does not say it was fenced:\n%s", a.log.String())
	}

	px.heal()
	waitFor(t, "gw-a joins again", waitLimit, func() bool {
		st, err := b.Status(context.Background())
		return err == nil && len(st) == 2 && a.Open()
	})
	waitFor(t, "gw-a sees every holder", waitLimit, func() bool {
		for ip := range table() {
			if n, ok := a.Holder(ip); !ok || n != "gw-b" {
				return false
			}
		}
		return true
	})
	if got := len(a.Held()); got != 0 {
		t.Errorf("gw-a took %d addresses back after it joined again, want 0", got)
	}
	if got := len(b.Held()); got != len(table()) {
		t.Errorf("gw-b holds %d after gw-a joined again, want %d", got, len(table()))
	}
}

// TestKeepOnEtcdLoss checks on_etcd_loss = "keep": a gateway cut off from
// etcd keeps its fence open and its addresses held, even once another
// gateway has taken them over (the documented split-brain risk).
func TestKeepOnEtcdLoss(t *testing.T) {
	ep := startEtcd(t)
	px := startProxy(t, ep)
	table := staticTable(10)
	keep := func(o *cluster.Options) { o.OnEtcdLoss = cluster.OnEtcdLossKeep }
	a := startGateway(t, "gw-a", px.url(), table, keep)
	waitFor(t, "gw-a holds every address", waitLimit, func() bool { return exactlyOnce(table(), a) })
	b := startGateway(t, "gw-b", ep, table, keep)
	waitFor(t, "10 addresses held once each", waitLimit, func() bool { return exactlyOnce(table(), a, b) })
	heldA := len(a.st.holding())
	if heldA == 0 {
		t.Fatalf("gw-a holds nothing; the test needs it to hold some")
	}
	px.cutOff()
	waitFor(t, "gw-b holds every address", waitLimit, func() bool { return len(b.st.holding()) == len(table()) })
	if !a.Open() {
		t.Errorf("gw-a's fence shut with on_etcd_loss = keep")
	}
	if got := len(a.st.holding()); got != heldA {
		t.Errorf("gw-a's stack holds %d while cut off with keep, want %d", got, heldA)
	}
}

// TestStartWithoutEtcd checks that a gateway whose etcd is unreachable at
// start-up says so, holds nothing with its fence shut, and joins once etcd
// can be reached.
func TestStartWithoutEtcd(t *testing.T) {
	ep := startEtcd(t)
	px := startProxy(t, ep)
	px.cutOff()
	table := staticTable(5)
	a := startGateway(t, "gw-a", px.url(), table, nil)
	waitFor(t, "a log line about etcd at start-up", waitLimit, func() bool {
		return strings.Contains(a.log.String(), "cannot join the cluster at start-up")
	})
	if a.Open() || len(a.Held()) != 0 {
		t.Errorf("without etcd: Open() = %v, holds %d; want false, 0", a.Open(), len(a.Held()))
	}
	px.heal()
	waitFor(t, "gw-a holds the table once etcd is reachable", waitLimit, func() bool { return exactlyOnce(table(), a) })
	if !a.Open() {
		t.Errorf("gw-a's fence is shut after it joined")
	}
}

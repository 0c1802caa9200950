package cluster_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/vipmux/vipmux/cluster"
	"github.com/vipmux/vipmux/internal/etcdtest"
)

// startEtcd starts an embedded one-member etcd on 127.0.0.1 with the
// timing of the e2e tests (heartbeat 50 ms, election 500 ms: minimum lease
// TTL 1 s) and returns its client URL; it stops in cleanup.
func startEtcd(t testing.TB) string {
	t.Helper()
	return etcdtest.Start(t, etcdtest.Options{TickMs: 50, ElectionMs: 500, Sync: true}).URL
}

// proxy is an in-process TCP proxy in front of etcd that a test cuts, to
// cut one gateway off from etcd while the others still reach it.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

// startProxy returns a proxy to the etcd at target (a URL); it stops in
// cleanup.
func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("parse %q: %v", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &proxy{ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cutOff()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cutOff closes every proxied connection and refuses new ones.
func (p *proxy) cutOff() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// heal lets connections through again.
func (p *proxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// fakeStack stands for the gateway's stack: it holds the table addresses
// that the cluster holds, as stack.Stack does.
type fakeStack struct {
	c     *cluster.Cluster
	table func() map[netip.Addr]struct{}

	mu          sync.Mutex
	on          map[netip.Addr]bool
	onAdd       func(added []netip.Addr)
	reannounced map[netip.Addr]int
}

func (s *fakeStack) Rehold() ([]netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[netip.Addr]bool{}
	var added []netip.Addr
	for a := range s.table() {
		if s.c.Holds(a) {
			want[a] = true
			if !s.on[a] {
				added = append(added, a)
			}
		}
	}
	s.on = want
	if s.onAdd != nil && len(added) > 0 {
		s.onAdd(added)
	}
	return added, nil
}

func (s *fakeStack) Reannounce(addrs []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range addrs {
		if s.on[a] {
			s.reannounced[a]++
		}
	}
}

// holding returns the addresses the fake stack holds.
func (s *fakeStack) holding() map[netip.Addr]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[netip.Addr]bool{}
	for a := range s.on {
		out[a] = true
	}
	return out
}

// syncBuffer is a log destination that tests read while gateways write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// gw is one gateway of a test cluster.
type gw struct {
	*cluster.Cluster
	st  *fakeStack
	log *syncBuffer
}

// startGateway starts a gateway named name on etcd at endpoint, holding
// addresses of table; set changes the options first. It stops in cleanup.
func startGateway(t testing.TB, name, endpoint string, table func() map[netip.Addr]struct{}, set func(*cluster.Options)) *gw {
	t.Helper()
	buf := &syncBuffer{}
	opts := cluster.Options{
		Endpoints:       []string{endpoint},
		Node:            name,
		MAC:             "02:00:00:00:00:0" + name[len(name)-1:],
		Lease:           2 * time.Second,
		TableAddrs:      table,
		ReannounceAfter: 500 * time.Millisecond,
		DialTimeout:     500 * time.Millisecond,
		Logger:          slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if set != nil {
		set(&opts)
	}
	c, err := cluster.New(opts)
	if err != nil {
		t.Fatalf("cluster.New(%s): %v", name, err)
	}
	st := &fakeStack{c: c, table: table, on: map[netip.Addr]bool{}, reannounced: map[netip.Addr]int{}}
	if err := c.Start(context.Background(), st); err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	t.Cleanup(c.Close)
	return &gw{Cluster: c, st: st, log: buf}
}

// staticTable returns a TableAddrs function for n addresses of
// 198.18.1.0/24.
func staticTable(n int) func() map[netip.Addr]struct{} {
	m := map[netip.Addr]struct{}{}
	a := netip.MustParseAddr("198.18.1.1")
	for range n {
		m[a] = struct{}{}
		a = a.Next()
	}
	return func() map[netip.Addr]struct{} { return m }
}

// waitFor polls cond until it holds, failing the test after limit (a
// bound for a stuck test, not a measurement).
func waitFor(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(limit); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not reached within %v", what, limit)
		}
	}
}

// dumpLogs prints the gateways' logs if the test fails.
func dumpLogs(t *testing.T, gws ...*gw) {
	t.Cleanup(func() {
		if t.Failed() {
			for i, g := range gws {
				t.Logf("log of gateway %d:\n%s", i, g.log.String())
			}
		}
	})
}

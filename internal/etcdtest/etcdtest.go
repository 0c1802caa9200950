// Package etcdtest starts an embedded one-member etcd on loopback for the
// tests of the packages that use etcd (etcdstore, cluster, gateway). Only
// tests import it: the vipmux binary links etcd's client alone, never its
// server.
package etcdtest

import (
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Options say how the server runs. The zero value is a fast test server
// (heartbeat 10 ms, election 100 ms, no fsync) on free loopback ports.
type Options struct {
	// TickMs and ElectionMs are etcd's heartbeat and election timeout;
	// zero means 10 and 100. The e2e tests' timing is 50 and 500 (the
	// minimum lease TTL is then 1 s).
	TickMs, ElectionMs uint
	// Sync makes the server fsync as a real one does; the default skips
	// it (UnsafeNoFsync), which tests do not need.
	Sync bool
	// Client is the URL the server serves clients on; empty means a free
	// loopback port.
	Client *url.URL
}

// Server is a running embedded etcd; it stops in the test's cleanup.
type Server struct {
	// URL is the client URL, e.g. "http://127.0.0.1:41234".
	URL string

	t   testing.TB
	cfg *embed.Config
	e   *embed.Etcd
}

// Start starts an embedded etcd with opts and waits until it is ready.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	client := FreeURL(t)
	if opts.Client != nil {
		client = *opts.Client
	}
	peer := FreeURL(t)
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Name = "test"
	cfg.LogLevel = "error"
	cfg.TickMs, cfg.ElectionMs = 10, 100
	if opts.TickMs != 0 {
		cfg.TickMs = opts.TickMs
	}
	if opts.ElectionMs != 0 {
		cfg.ElectionMs = opts.ElectionMs
	}
	cfg.UnsafeNoFsync = !opts.Sync
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	s := &Server{URL: client.String(), t: t, cfg: cfg}
	s.start()
	t.Cleanup(func() { s.e.Close() })
	return s
}

func (s *Server) start() {
	s.t.Helper()
	e, err := embed.StartEtcd(s.cfg)
	if err != nil {
		s.t.Fatalf("start embedded etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		s.t.Fatal("embedded etcd not ready after 30s")
	}
	s.e = e
}

// Restart stops the server and starts it again with the same data and
// addresses.
func (s *Server) Restart() {
	s.t.Helper()
	s.e.Close()
	s.start()
}

// FreeURL returns an http URL on a loopback port that was free a moment
// ago.
func FreeURL(t testing.TB) url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}

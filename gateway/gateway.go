// Package gateway assembles one running vipmux gateway from a config, a
// front link and a store, and is the only package that knows all the
// others: it builds the registry, the gVisor stack, the forwarder, the
// health checker, the metrics and the control API, wires them together,
// owns every goroutine it starts, applies reloads, and tears everything
// down in an order written in Close.
//
// It does not read files, parse flags or handle signals: cmd/vipmux does
// that and hands the gateway a validated *config.Config.
//
//	gw, err := gateway.New(gateway.Options{Config: cfg, Store: store, Logger: log})
//	if err != nil {
//		return err
//	}
//	err = gw.Run(ctx) // until ctx is done
//	return errors.Join(err, gw.Close())
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipmux/vipmux/cluster"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/etcdstore"
	"github.com/vipmux/vipmux/health"
	"github.com/vipmux/vipmux/metrics"
	"github.com/vipmux/vipmux/nic"
	"github.com/vipmux/vipmux/notify"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ExpiryInterval is how often the gateway ends the leases that ran out: a
// lease ends within ExpiryInterval of running out.
const ExpiryInterval = 100 * time.Millisecond

var (
	// ErrClosed is returned by Run and Reload after Close.
	ErrClosed = errors.New("gateway closed")
	// ErrRunning is returned by a second call of Run.
	ErrRunning = errors.New("gateway already running")
)

// Options configures a Gateway. Config is required; the rest have
// defaults.
type Options struct {
	// Config is the configuration to start with; it has been validated.
	// The gateway keeps it (and later the reloaded ones) and never
	// changes it.
	Config *config.Config
	// ConfigPath names the file Config was read from in the log lines of
	// reloads; it may be empty.
	ConfigPath string
	// Load reads the configuration again for Reread (SIGHUP, POST
	// /v1/reload): the file, with the command line's overrides. Nil:
	// rereading is refused, Reload still applies what it is given.
	Load func() (*config.Config, error)
	// Link is the front link the stack runs on. The gateway owns it from
	// New on: Close closes it once the stack has stopped (also when New
	// fails). Nil: New opens the link that Config's [nic] section
	// describes, after the control and metrics listeners are open, so
	// that a port in use leaves the interface untouched.
	Link *nic.Link
	// OpenCapture, if not nil, opens the writer that receives the front
	// link's frames (both ways) in pcap format (serve --pcap). New calls
	// it once the listeners are open, so that a port in use leaves an
	// earlier capture as it was. Close flushes the capture after the
	// stack has stopped, then closes the writer if it is an io.Closer.
	OpenCapture func() (io.Writer, error)
	// Control, if not nil, is the listener that Run serves the control
	// API on, instead of one that New opens on control.listen. The
	// gateway closes it.
	Control net.Listener
	// Store persists the table; nil keeps it in memory only. If it is an
	// io.Closer, Close closes it last.
	Store registry.Store
	// Logger receives the gateway's log lines; nil discards them.
	Logger *slog.Logger
	// AllowLoopbackBackends accepts loopback backends, which the
	// registry refuses otherwise (they would forward the front network
	// to the gateway's own host). Only for tests whose backends are
	// kernel listeners on loopback; serve never sets it.
	AllowLoopbackBackends bool
	// Context, if not nil, bounds New's wait for etcd at start-up
	// ([cluster]: New retries until etcd answers); cancelling it makes New
	// give up. It does not outlive New.
	Context context.Context
	// SetLog applies a reloaded [log] section to Logger (the level and
	// format live with whoever built Logger). Nil: [log] changes are
	// accepted and have no effect.
	SetLog func(config.Log)
	// Reloading, if not nil, is called when Reread begins (SIGHUP, POST
	// /v1/reload), and the function it returns when Reread ends, with
	// Reread's error (nil: applied). serve tells systemd with them
	// (RELOADING=1, then READY=1).
	Reloading func() (done func(error))
	// Version and Revision name the build in vipmux_build_info; empty
	// ones read "unknown".
	Version, Revision string
	// Cluster, if not nil, makes the gateway one of a cluster sharing its
	// table through etcd (docs/cluster.md): its stack holds only the
	// table addresses that the cluster gives it, and its front link is
	// fenced (nic.Fence) by the cluster's lease deadline. New fills in
	// TableAddrs, MAC, Control and Logger. Nil: from Config's [cluster]
	// when it has etcd endpoints, else the gateway holds the whole table
	// alone.
	Cluster *cluster.Options
}

// Gateway is one running gateway. Its methods are safe for concurrent
// use.
type Gateway struct {
	log     *slog.Logger
	load    func() (*config.Config, error)
	path    string
	setLog  func(config.Log)
	store   registry.Store
	link    *nic.Link
	capture *nic.Capture
	// captureOut is what the capture writes to (Options.OpenCapture).
	captureOut io.Writer
	reg        *registry.Registry
	// cl is the gateway's cluster membership (Options.Cluster); nil
	// alone.
	cl      *cluster.Cluster
	st      *stack.Stack
	fwd     *dispatch.Forwarder
	hc      *health.Checker
	health  healthRunner
	mtr     *metrics.Metrics
	ntf     *notify.Notifier
	handler http.Handler
	// reloading is Options.Reloading.
	reloading func() func(error)
	// ctl and mln are the control and metrics listeners (mln may be nil);
	// Run serves them, Close closes them.
	ctl, mln net.Listener

	// ctx is cancelled by Close; every goroutine that the gateway starts
	// ends when it is, and wg counts them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	// stopping is set when Close begins (Healthy reads it without mu,
	// which a reload may hold for a while).
	stopping atomic.Bool

	// shared is [shared] address in force, for the control API.
	shared atomicAddr
	// token is the control API's token in force ("" for none): read from
	// [control] token_file at start and again on every reload.
	token atomic.Pointer[string]
	// cert is the control API's TLS certificate in force, nil for plain
	// HTTP: read from [control] tls_cert and tls_key at start and again on
	// every reload.
	cert atomic.Pointer[tls.Certificate]

	// mu serializes reloads, Run's start and Close's start, and guards
	// the following fields.
	mu sync.Mutex
	// cfg is the configuration in force.
	cfg *config.Config
	// running is set by Run; closed by Close.
	running, closed bool
}

// New assembles a gateway from opts: it opens the listeners and the front
// link, restores the table, builds the stack on the link (the restored
// addresses are announced), and wires the forwarder, the health checker,
// the metrics and the control API to the registry. The stack answers ARP
// and accepts connections from here on; Run serves the control API and
// starts the background work. On error, whatever New built is closed.
func New(opts Options) (_ *Gateway, err error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("gateway: Options.Config is required")
	}
	g := &Gateway{
		log:    opts.Logger,
		load:   opts.Load,
		path:   opts.ConfigPath,
		setLog: opts.SetLog,
		store:  opts.Store,
		link:   opts.Link,
		cfg:    cfg,
	}
	g.reloading = opts.Reloading
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.shared.Store(cfg.Shared.Address)
	defer func() {
		if err != nil {
			g.Close()
		}
	}()

	token, err := readToken(cfg.Control.TokenFile)
	if err != nil {
		return nil, err
	}
	g.token.Store(&token)
	cert, err := readCert(cfg.Control)
	if err != nil {
		return nil, err
	}
	g.cert.Store(cert)
	var shared *etcdstore.Store
	if cfg.Cluster.Enabled() {
		// [cluster]: the table is etcd's, shared by the gateways (cluster.go).
		octx := opts.Context
		if octx == nil {
			octx = g.ctx
		}
		if shared, err = openTable(octx, cfg.Cluster, g.log); err != nil {
			return nil, err
		}
		g.store = shared
	}
	// The recorder exists first: the registry, the forwarder and the
	// health checker report to it as they work.
	rec := metrics.NewRecorder()
	g.reg, err = registry.New(registry.Options{
		Networks: cfg.NIC.Networks,
		Store:    g.store,
		Failback: cfg.Health.Failback,
		Logger:   g.log,
		// The shared address is the gateway's too: never a backend.
		FrontAddr:             func(a netip.Addr) bool { return a == g.Shared() },
		AllowLoopbackBackends: opts.AllowLoopbackBackends,
		ObserveSave:           rec.ObserveSave,
		OnEvent:               rec.Event,
		MaxBindings:           cfg.State.MaxBindings,
		MaxMembersPerPort:     cfg.State.MaxMembersPerPort,
	})
	if err != nil && shared != nil {
		return nil, fmt.Errorf("cluster.etcd: the shared table: %w", err)
	}
	if err != nil {
		// The file is left exactly as it was: it may be all that is left
		// of the table.
		return nil, fmt.Errorf("state.path %s: %w; the file is left unchanged: repair it, or run serve --reset-state to move it aside and start with an empty table", cfg.State.Path, err)
	}
	// Listen before touching the NIC: a port in use is the commonest
	// mistake and should change nothing.
	g.ctl = opts.Control
	if g.ctl == nil {
		g.ctl, err = net.Listen("tcp", cfg.Control.Listen)
		if err != nil {
			return nil, fmt.Errorf("control.listen: %w", err)
		}
	}
	// A flood of idle or slow clients holds at most max_connections
	// goroutines and descriptors.
	g.ctl = control.LimitListener(g.ctl, cfg.Control.MaxConnections)
	if cert != nil {
		// HTTPS only; GetCertificate serves the certificate in force, which
		// a reload may replace.
		g.ctl = tls.NewListener(g.ctl, &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return g.cert.Load(), nil },
		})
	}
	if cfg.Metrics.Listen != "" {
		g.mln, err = net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return nil, fmt.Errorf("metrics.listen: %w", err)
		}
	}
	if opts.OpenCapture != nil {
		// The writer's errors name what it is (serve's say --pcap).
		w, err := opts.OpenCapture()
		if err != nil {
			return nil, err
		}
		g.captureOut = w
	}
	if g.link == nil {
		g.link, err = nic.Open(nic.Options{
			Driver:    cfg.NIC.Driver,
			Interface: cfg.NIC.Interface,
			MAC:       cfg.NIC.MAC,
			MTU:       uint32(cfg.NIC.MTU),
			Offload:   cfg.NIC.Offload,
			Logger:    g.log,
		})
		if err != nil {
			return nil, err
		}
	}
	// The capture is always on the front link: with no recording (serve
	// --pcap's, or GET /v1/capture's) a frame costs it one atomic load.
	g.capture, err = nic.NewCapture(g.link.Endpoint, g.captureOut, nic.DefaultSnapLen, g.log)
	if err != nil {
		return nil, fmt.Errorf("capture the front link's frames: %w", err)
	}
	// The restored table's addresses were the gateway's before the
	// restart: announced again, not probed. Not in a cluster: there the
	// table is everyone's, and a taken address is always probed (the
	// tripwire against an old holder that still answers).
	restored := slices.Collect(maps.Keys(g.reg.Table().Addrs()))
	var front gstack.LinkEndpoint = g.capture // what the stack sends and receives through
	var holder stack.Holder                   // nil: the whole table
	clusterOpts := opts.Cluster
	if clusterOpts == nil && cfg.Cluster.Enabled() {
		if clusterOpts, err = clusterOptions(cfg.Cluster); err != nil {
			return nil, err
		}
	}
	if clusterOpts != nil {
		co := *clusterOpts
		co.TableAddrs = func() map[netip.Addr]struct{} { return g.reg.Table().Addrs() }
		co.MAC = g.link.MAC.String()
		co.Control = g.ctl.Addr().String()
		co.Logger = g.log
		if g.cl, err = cluster.New(co); err != nil {
			return nil, fmt.Errorf("[cluster]: %w", err)
		}
		// Above the capture: it records every frame that arrives, and
		// what the fence let the stack send.
		front = nic.NewFence(front, g.cl)
		holder = g.cl
		restored = nil
	}
	g.st, err = stack.New(stack.Options{
		Link:         front,
		Networks:     cfg.NIC.Networks,
		Router:       cfg.NIC.Router,
		Static:       staticAddrs(cfg),
		TimeWait:     cfg.Dispatch.TimeWait.Duration,
		DelayedAck:   cfg.Dispatch.DelayedAck.Duration,
		GARPCount:    cfg.ARP.GARPCount,
		GARPInterval: cfg.ARP.GARPInterval.Duration,
		DADProbes:    cfg.ARP.DADProbes,
		DADInterval:  cfg.ARP.DADInterval.Duration,
		Refresh:      cfg.ARP.Refresh.Duration,
		Restored:     restored,
		Holder:       holder,
		Logger:       g.log,
	})
	if err != nil {
		return nil, err
	}
	// Events for [notify]: delivered by Run's goroutine; the table's
	// come from every published change, a refused address from the
	// stack's duplicate-address detection.
	g.ntf = notify.New(notifySettings(cfg.Notify), g.log)
	if err := g.reg.SetApplier(dadNotifier{g.st, g.ntf}); err != nil {
		return nil, err
	}
	g.reg.Watch(func(prev, next *registry.Table) {
		for _, e := range notify.Events(prev, next, time.Now()) {
			g.ntf.Send(e)
		}
	})
	// The checker exists even while [health] enabled = false, so that a
	// reload can turn it on. It also hears of the forwarder's failed
	// dials (passive checking); they are ignored while it does not run.
	defaults, ports := healthSettings(cfg.Health)
	g.hc, err = health.New(health.Options{Registry: g.reg, Defaults: defaults, Ports: ports, Logger: g.log, ObserveProbe: rec.ObserveProbe})
	if err != nil {
		return nil, fmt.Errorf("[health]: %w", err)
	}
	g.health = healthRunner{hc: g.hc}
	g.fwd = dispatch.New(dispatch.Options{Table: g.reg, DialTimeout: cfg.Dispatch.DialTimeout.Duration, Logger: g.log, Observer: g.hc, Limits: dispatchLimits(cfg.Dispatch),
		ObserveDial: rec.ObserveDial})
	g.reg.Watch(g.fwd.Prune) // a member that leaves takes its connections along
	g.st.HandleTCP(cfg.Dispatch.MaxInFlight, g.fwd.Handle)
	g.mtr, err = metrics.New(metrics.Options{Table: g.reg, Conns: g.fwd, Stack: g.st, Recorder: rec, PerMember: cfg.Metrics.PerMember,
		Version: opts.Version, Revision: opts.Revision, Notifications: g.ntf.Stats, Logger: g.log})
	if err != nil {
		return nil, err
	}
	g.reg.Watch(g.mtr.Watch) // counts and logs switches and failovers
	if shared != nil {
		// Other gateways' changes reach the table (and the stack, the
		// forwarder, the metrics) from here on; Close's step 2 stops it.
		g.wg.Go(func() { _ = shared.Run(g.ctx, g.reg) })
	}

	var clusterCtl control.Cluster // nil: no cluster endpoints
	if g.cl != nil {
		clusterCtl = clusterAPI{g.cl}
	}
	g.handler, err = control.NewHandler(control.Options{
		Registry:   g.reg,
		Shared:     cfg.Shared.Address,
		SharedFunc: g.Shared,
		TokenFunc:  func() string { return *g.token.Load() },
		Conns:      g.fwd,
		Reload:     func(context.Context) ([]string, error) { return g.Reread("api") },
		Health:     g.Healthy,
		Metrics:    g.mtr.Handler(),
		Capture:    frontCapture{c: g.capture, done: g.ctx.Done()},
		Cluster:    clusterCtl,
		Logger:     g.log,
	})
	if err != nil {
		return nil, err
	}
	if g.cl != nil {
		g.reg.Watch(func(_, _ *registry.Table) { g.cl.TableChanged() })
		if err := g.cl.Start(g.ctx, g.st); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Run serves the control API (and [metrics] listen) and runs the lease
// expiry until ctx is done or Close is called, and starts the health
// checks if [health] enabled (they run until Close, or a reload turns
// them off). It returns nil when ctx is done or Close was called, the
// front link's error when the link failed (its interface deleted, its
// receive loop dead: a gateway without its front link serves nothing,
// so it stops rather than live on), or the error that stopped the
// control API. Call Close afterwards; Run may be called once.
func (g *Gateway) Run(ctx context.Context) error {
	g.mu.Lock()
	switch {
	case g.closed:
		g.mu.Unlock()
		return ErrClosed
	case g.running:
		g.mu.Unlock()
		return ErrRunning
	}
	g.running = true
	// Counted under mu: Close sets closed under mu before it waits, so it
	// waits for this Run.
	g.wg.Add(1)
	defer g.wg.Done()
	if g.cfg.Health.Enabled {
		g.health.start(g.ctx, &g.wg)
	}
	g.mu.Unlock()

	// Run's work ends when ctx is done or Close cancels g.ctx.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(g.ctx, cancel)()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	wg.Go(func() { _ = g.reg.RunExpiry(ctx, ExpiryInterval) })
	wg.Go(func() { g.ntf.Run(ctx) })
	linkDown := g.link.Done()
	wg.Go(func() {
		select {
		case <-linkDown:
			g.log.Error("front link failed; the gateway stops", "nic", g.link.Name, "err", g.link.Err())
			cancel()
		case <-ctx.Done():
		}
	})
	if g.mln != nil {
		wg.Go(func() { g.serveMetrics(ctx) })
	}
	cfg := g.Config()
	g.log.Info("gateway serving", "nic", g.link.Name, "driver", cfg.NIC.Driver, "mac", g.link.MAC.String(), "mtu", g.link.MTU,
		"networks", fmt.Sprint(cfg.NIC.Networks), "shared", g.Shared(), "bindings", g.reg.Table().Len(), "control", g.ctl.Addr().String())
	err := control.Serve(ctx, g.ctl, g.handler)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	select {
	case <-linkDown:
		return g.link.Err()
	default:
	}
	return err
}

// Healthy reports whether the gateway can serve, for GET /healthz: nil
// while it runs, the front link's error once the link failed (see
// nic.Link.Done), ErrClosed once Close has begun.
func (g *Gateway) Healthy() error {
	if g.link != nil {
		if err := g.link.Err(); err != nil {
			return err
		}
	}
	if g.stopping.Load() {
		return ErrClosed
	}
	return nil
}

// serveMetrics serves only GET /metrics (without the control token) on
// [metrics] listen until ctx is done. A failure is logged: the gateway
// goes on without the second listener, /metrics stays on the control
// listener.
func (g *Gateway) serveMetrics(ctx context.Context) {
	mux := http.NewServeMux()
	mux.Handle("GET "+control.PathMetrics, g.mtr.Handler())
	g.log.Info("serving metrics", "listen", g.mln.Addr().String(), "path", control.PathMetrics)
	if err := control.Serve(ctx, g.mln, mux); err != nil {
		g.log.Error("metrics listener stopped", "listen", g.mln.Addr().String(), "err", err)
	}
}

// Close stops the gateway: it ends the proxied connections, releases the
// addresses and the front link, and closes the store. It waits for every
// goroutine that the gateway started. Close is idempotent; it returns the
// first call's error.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() { g.closeErr = g.close() })
	return g.closeErr
}

// close is Close's one run. Each step says why it comes before the next.
// Every field may be nil: New calls it on a half-built gateway.
func (g *Gateway) close() error {
	// 1. Mark the gateway closed, under mu: a reload in progress finishes
	// first, and none starts afterwards (it could start the health
	// checker again, or change the stack while it stops); Run does not
	// start either.
	g.stopping.Store(true)
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	if g.fwd != nil && g.handler != nil {
		g.log.Info("gateway stopping", "proxied_connections", g.fwd.Active())
	}

	// 2. Cancel and wait for Run and its goroutines (control API, metrics
	// listener, lease expiry) and the health checker: they are the
	// registry's writers. Once they have stopped, the table no longer
	// changes, so nothing below races a registration, a switch or an
	// expiry that would add an address to a closing stack or prune
	// connections in a closing forwarder.
	g.cancel()
	g.health.stop()
	g.wg.Wait()
	// The listeners that Run did not serve (control.Serve closes the
	// others; a second Close of a listener is harmless).
	for _, ln := range []net.Listener{g.ctl, g.mln} {
		if ln != nil {
			ln.Close()
		}
	}

	// 2b. Leave the cluster: the fence shuts, the stack lets every
	// address go and the lease is revoked, so that the other gateways
	// take the addresses over now rather than when the lease would end.
	if g.cl != nil {
		g.cl.Close()
	}

	var errs []error
	// 3. Close the forwarder before the stack: it aborts the pending
	// backend dials and the proxied connections and waits for their copy
	// goroutines, which read and write the stack's endpoints. Closing
	// the stack first would leave them blocked on endpoints of a stack
	// that no longer runs. Clients get a RST while the NIC still sends.
	if g.fwd != nil {
		g.fwd.Close()
	}
	// 4. Close the stack: it stops its goroutines (TCP timers, the ARP
	// announcements), releases the addresses and waits for the link
	// endpoint's goroutines. Before the capture and the link: both are
	// used by the stack until it has stopped.
	if g.st != nil {
		g.st.Close()
	}
	// 5. Flush the capture, then close its writer: after the stack, no
	// frame crosses any more, so the file is complete.
	if g.capture != nil {
		if err := g.capture.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("pcap: the capture may be incomplete: %w", err))
		}
	}
	if c, ok := g.captureOut.(io.Closer); ok {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("pcap: the capture may be incomplete: %w", err))
		}
	}
	// 6. Close the front link: its file descriptors (or tap device) go
	// only once the stack and its endpoint goroutines have let go of
	// them (nic.Link.Close's contract).
	if g.link != nil {
		if err := g.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the front link: %w", err))
		}
	}
	// 7. Close the store last: everything that saves the table (the
	// registry's writers, stopped in step 2) is done, so the last write
	// is on disk and the journal can be closed.
	if c, ok := g.store.(io.Closer); ok {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the store: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Handler returns the control API's handler: what Run serves on
// control.listen.
func (g *Gateway) Handler() http.Handler { return g.handler }

// ControlAddr returns the control listener's address.
func (g *Gateway) ControlAddr() net.Addr { return g.ctl.Addr() }

// Registry returns the gateway's registry, the table it serves.
func (g *Gateway) Registry() *registry.Registry { return g.reg }

// Addrs returns the addresses the stack holds, sorted.
func (g *Gateway) Addrs() []netip.Addr { return g.st.Addrs() }

// dispatchLimits are the forwarder's limits as [dispatch] sets them.
func dispatchLimits(d config.Dispatch) dispatch.Limits {
	l := dispatch.Limits{
		HandshakeTimeout:     d.HandshakeTimeout.Duration,
		HandshakeFirstAbove:  d.HandshakeFirstAbove,
		MaxInFlightPerSource: d.MaxInFlightPerSource,
		IdleTimeout:          d.IdleTimeout.Duration,
		MaxConnections:       d.MaxConnections,
	}
	if l.HandshakeFirstAbove == 0 {
		l.HandshakeFirstAbove = -1 // the config's 0: always handshake first
	}
	if l.MaxInFlightPerSource == 0 {
		l.MaxInFlightPerSource = max(1, d.MaxInFlight/4)
	}
	return l
}

// DispatchLimits returns the forwarder's limits in force ([dispatch]
// handshake_timeout, idle_timeout, ...).
func (g *Gateway) DispatchLimits() dispatch.Limits { return g.fwd.Limits() }

// DialTimeout returns the forwarder's backend dial timeout in force.
func (g *Gateway) DialTimeout() time.Duration { return g.fwd.DialTimeout() }

// Active returns the number of proxied connections.
func (g *Gateway) Active() int { return g.fwd.Active() }

// Shared returns [shared] address in force.
func (g *Gateway) Shared() netip.Addr { return g.shared.Load() }

// Config returns the configuration in force. The caller must not change
// it.
func (g *Gateway) Config() *config.Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg
}

// readToken reads the control API's token from path, "" when path is
// empty (no authentication).
func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	t, err := control.ReadTokenFile(path)
	if err != nil {
		return "", fmt.Errorf("control.token_file: %w", err)
	}
	return t, nil
}

// readCert loads the control API's certificate and key; nil when c has
// no tls_cert (plain HTTP).
func readCert(c config.Control) (*tls.Certificate, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("control.tls_cert: load %s and control.tls_key %s: %w", c.TLSCert, c.TLSKey, err)
	}
	return &cert, nil
}

// staticAddrs are the addresses that cfg has the stack hold besides the
// registry's: the shared address.
func staticAddrs(cfg *config.Config) []netip.Addr {
	if !cfg.Shared.Address.IsValid() {
		return nil
	}
	return []netip.Addr{cfg.Shared.Address}
}

// healthRunner runs a health.Checker while health checks are enabled.
type healthRunner struct {
	hc *health.Checker

	// mu guards the following fields.
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs the checker until ctx is done or stop, unless it runs
// already; wg counts its goroutine.
func (h *healthRunner) start(ctx context.Context, wg *sync.WaitGroup) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel != nil || h.hc == nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	h.cancel, h.done = cancel, done
	wg.Go(func() {
		defer close(done)
		_ = h.hc.Run(ctx)
	})
}

// stop stops the checker and waits for it; it reports whether it was
// running.
func (h *healthRunner) stop() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel == nil {
		return false
	}
	h.cancel()
	<-h.done
	h.cancel, h.done = nil, nil
	return true
}

// notifySettings are [notify]'s.
func notifySettings(c config.Notify) notify.Settings {
	return notify.Settings{Exec: c.Exec, Webhook: c.Webhook, Timeout: c.Timeout.Duration}
}

// dadNotifier is the stack as the registry's applier, which also reports
// an address that duplicate-address detection refused ([notify]).
type dadNotifier struct {
	*stack.Stack
	ntf *notify.Notifier
}

// Prepare is the stack's; a conflict is also an event.
func (d dadNotifier) Prepare(prev, next *registry.Table) error {
	err := d.Stack.Prepare(prev, next)
	if ce := (*stack.ConflictError)(nil); errors.As(err, &ce) {
		d.ntf.Send(notify.Event{Kind: notify.DADConflict, Binding: ce.Addr.String(), Why: ce.Error()})
	}
	return err
}

// frontCapture serves GET /v1/capture (control.Capturer) from the front
// link's capture. Its recordings end when done is closed (Close cancels
// the gateway's context), so that a capture does not hold up the control
// API's shutdown.
type frontCapture struct {
	c    *nic.Capture
	done <-chan struct{}
}

// recording is a control.Recording that ends with the gateway.
type recording struct {
	*nic.Recording
	done <-chan struct{}
}

// Done is closed when the gateway stops.
func (r recording) Done() <-chan struct{} { return r.done }

// Capture implements control.Capturer.
func (f frontCapture) Capture(w io.Writer, snapLen int, filter string) (control.Recording, error) {
	m, err := nic.ParseFilter(filter)
	if err != nil {
		return nil, registry.Invalid("filter", "%v", err)
	}
	r, err := f.c.Record(w, uint32(snapLen), m)
	if err != nil {
		return nil, err
	}
	return recording{Recording: r, done: f.done}, nil
}

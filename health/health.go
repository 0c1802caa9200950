// Package health probes the backends of mode-2 members and reports what it
// finds to the registry, which fails over from a dead active member to the
// first healthy standby.
//
// A Checker owns one goroutine per probed member: every member of every
// binding with a port (mode 2). A probe is a TCP connect to the member's
// backend (backend port 0 means the binding's port), closed at once. After
// Fall consecutive failures an up member is marked down; after Rise
// consecutive successes a member that is down for any reason but its lease
// is marked up again. The checker never changes states itself: failover,
// failback and the event log are the registry's (registry.SetHealth).
// Mode-1 bindings (every port of an IP) are not probed: there is no standby
// to fail over to, and no single port to probe.
//
// Passive checking: the forwarder reports every failed backend dial of a
// client connection (DialFailed), and the member's prober takes it as a
// check result at once, without waiting for its next probe. A refused
// dial (RST, or an ICMP unreachable) is conclusive: the backend's host
// answered that nothing listens, so the member is marked down at once,
// like HAProxy's "observe layer4 error-limit 1 on-error mark-down". A dial
// that timed out may be one lost SYN, so it counts as one failed probe
// towards Fall, like HAProxy's "on-error fail-check". The probes stay the
// backstop, and the only way back up (Rise).
//
//	c, err := health.New(health.Options{Registry: reg, Logger: log})
//	if err != nil { ... }
//	go c.Run(ctx) // returns once ctx is done and every prober has stopped
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vipmux/vipmux/registry"
)

// Settings are the probe parameters of one port.
type Settings struct {
	// Interval is the time between the starts of two probes of a member.
	Interval time.Duration
	// Timeout bounds one probe (the TCP connect).
	Timeout time.Duration
	// Rise is how many consecutive successful probes bring a down member
	// up again.
	Rise int
	// Fall is how many consecutive failed probes mark an up member down.
	Fall int
}

// DefaultSettings are the settings used when Options.Defaults leaves a field
// zero.
//
// They are chosen so that a dead active member is failed over from well
// within a second (issue 5 asks for at most 1 s from the server's death to
// the first new connection served by the standby): the first failed probe
// comes at most Interval after the death, the second (Fall = 2) one Interval
// later, so the registry promotes the standby within about
// 2 × Interval + Timeout = 300 ms, and new connections go to the standby as
// soon as the table is published. A dead server on a LAN refuses the
// connect at once (RST) or, if the whole computer is gone, stays silent,
// which the 100 ms Timeout catches: a backend on the back link answers a SYN
// in well under a millisecond, so 100 ms is two orders of magnitude of
// headroom. Fall = 2 rather than 1 keeps a single lost SYN from causing a
// failover; Rise = 2 keeps a server that is still starting (or flapping)
// from being declared up on one lucky connect. The cost is one connect per
// member every 100 ms: negligible for a backend, and it is what keepalived
// and HAProxy spend at their fast settings.
var DefaultSettings = Settings{
	Interval: 100 * time.Millisecond,
	Timeout:  100 * time.Millisecond,
	Rise:     2,
	Fall:     2,
}

// Limits that New enforces on Settings.
const (
	// MinInterval is the shortest Interval accepted.
	MinInterval = 10 * time.Millisecond
	// MaxInterval is the longest Interval accepted.
	MaxInterval = time.Hour
	// MinTimeout is the shortest Timeout accepted.
	MinTimeout = time.Millisecond
	// MaxTimeout is the longest Timeout accepted.
	MaxTimeout = time.Minute
	// MaxCount is the largest Rise or Fall accepted.
	MaxCount = 100
)

// Reasons that the checker gives the registry.
const (
	// ReasonFailedPrefix starts the Reason of a member that its health
	// check marked down; the probe's error follows.
	ReasonFailedPrefix = "health check failed: "
	// ReasonObservedPrefix follows ReasonFailedPrefix in the Reason of a
	// member that a failed dial of a client connection marked down
	// (passive checking); the dial's error follows.
	ReasonObservedPrefix = "client connection: "
	// ReasonPassed is the Reason of a member that its health check
	// brought up again.
	ReasonPassed = "health check passed"
)

// Options configures a Checker.
type Options struct {
	// Registry is the table whose mode-2 members are probed and told
	// about. Required.
	Registry *registry.Registry
	// Defaults are the settings of every port without an entry in Ports;
	// a zero field means the DefaultSettings value.
	Defaults Settings
	// Ports overrides the settings per binding port; a zero field means
	// the Defaults value.
	Ports map[uint16]Settings
	// Dial opens the probe's connection; nil means a net.Dialer. The
	// checker closes the connection at once.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives a line per state change reported and per failure to
	// report one; nil discards.
	Logger *slog.Logger
	// ObserveProbe, when not nil, is told how long each probe took,
	// successful or not (the metrics' health check histogram).
	ObserveProbe func(time.Duration)
}

// Checker probes every mode-2 member of a registry. Create it with New and
// run it with Run.
type Checker struct {
	reg  *registry.Registry
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	log  *slog.Logger
	// observe is Options.ObserveProbe.
	observe func(time.Duration)
	// changed is signalled (without blocking) after every table change
	// and every Update.
	changed chan struct{}

	// mu guards the following fields.
	mu       sync.Mutex
	defaults Settings
	ports    map[uint16]Settings
	// observed are the passive inputs of the running probers, by member;
	// empty while Run does not run.
	observed map[memberID]chan error
}

// memberID names a member of a binding.
type memberID struct {
	key  registry.Key
	name string
}

// New checks opts and returns a Checker. It installs a registry watcher
// that only signals the Checker; nothing is probed until Run.
func New(opts Options) (*Checker, error) {
	if opts.Registry == nil {
		return nil, errors.New("health: Options.Registry is required")
	}
	defaults, ports, err := resolve(opts.Defaults, opts.Ports)
	if err != nil {
		return nil, err
	}
	c := &Checker{
		reg:      opts.Registry,
		defaults: defaults,
		ports:    ports,
		dial:     opts.Dial,
		log:      opts.Logger,
		changed:  make(chan struct{}, 1),
		observed: map[memberID]chan error{},
		observe:  opts.ObserveProbe,
	}
	if c.dial == nil {
		c.dial = (&net.Dialer{}).DialContext
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	// The watcher runs under the registry's write lock: it must not call
	// back into the registry, so it only wakes Run.
	c.reg.Watch(func(_, _ *registry.Table) { c.wake() })
	return c, nil
}

// wake makes Run reconcile its probers with the table and the settings.
func (c *Checker) wake() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// resolve fills the zero fields of defaults from DefaultSettings and those
// of each port's settings from defaults, and checks the result.
func resolve(defaults Settings, ports map[uint16]Settings) (Settings, map[uint16]Settings, error) {
	defaults = merge(defaults, DefaultSettings)
	out := make(map[uint16]Settings, len(ports))
	var errs []error
	if err := defaults.check(); err != nil {
		errs = append(errs, fmt.Errorf("health: defaults: %w", err))
	}
	for port, s := range ports {
		if port == 0 {
			errs = append(errs, errors.New("health: port 0: settings need a port 1..65535"))
			continue
		}
		s = merge(s, defaults)
		if err := s.check(); err != nil {
			errs = append(errs, fmt.Errorf("health: port %d: %w", port, err))
		}
		out[port] = s
	}
	if err := errors.Join(errs...); err != nil {
		return Settings{}, nil, err
	}
	return defaults, out, nil
}

// Check reports whether Update would accept defaults and ports, without
// changing anything.
func Check(defaults Settings, ports map[uint16]Settings) error {
	_, _, err := resolve(defaults, ports)
	return err
}

// Update replaces the settings, as New's Options.Defaults and Options.Ports
// would set them. A running Run replaces the prober of every member whose
// settings changed (it starts again with fresh counters and probes at
// once); the others keep running undisturbed. The registry's states are
// left as they are: a member that is down stays down until Rise good
// probes under the new settings. On an error nothing changes.
func (c *Checker) Update(defaults Settings, ports map[uint16]Settings) error {
	d, p, err := resolve(defaults, ports)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.defaults, c.ports = d, p
	c.mu.Unlock()
	c.wake()
	return nil
}

// merge fills the zero fields of s from def.
func merge(s, def Settings) Settings {
	if s.Interval == 0 {
		s.Interval = def.Interval
	}
	if s.Timeout == 0 {
		s.Timeout = def.Timeout
	}
	if s.Rise == 0 {
		s.Rise = def.Rise
	}
	if s.Fall == 0 {
		s.Fall = def.Fall
	}
	return s
}

// check reports every field of s that is out of range.
func (s Settings) check() error {
	var errs []error
	if s.Interval < MinInterval || s.Interval > MaxInterval {
		errs = append(errs, fmt.Errorf("interval %v is outside %v..%v", s.Interval, MinInterval, MaxInterval))
	}
	if s.Timeout < MinTimeout || s.Timeout > MaxTimeout {
		errs = append(errs, fmt.Errorf("timeout %v is outside %v..%v", s.Timeout, MinTimeout, MaxTimeout))
	}
	if s.Rise < 1 || s.Rise > MaxCount {
		errs = append(errs, fmt.Errorf("rise %d is outside 1..%d", s.Rise, MaxCount))
	}
	if s.Fall < 1 || s.Fall > MaxCount {
		errs = append(errs, fmt.Errorf("fall %d is outside 1..%d", s.Fall, MaxCount))
	}
	return errors.Join(errs...)
}

// Settings returns the settings that apply to binding port port.
func (c *Checker) Settings(port uint16) Settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.ports[port]; ok {
		return s
	}
	return c.defaults
}

// target is one probed member, with everything that its prober depends on:
// a change of any field replaces the prober.
type target struct {
	key      registry.Key
	name     string
	addr     netip.AddrPort
	settings Settings
}

// prober is the goroutine that probes one target.
type prober struct {
	cancel context.CancelFunc
	done   chan struct{}
	// observed receives the target's failed client dials (DialFailed).
	observed chan error
}

// DialFailed implements dispatch.Observer: a client connection's dial to
// member name of binding k failed with err. The member's prober takes it
// as a check result (see the package comment). It reports whether the
// member is under automatic failover, that is whether a prober watches
// it: then the forwarder may redispatch the connection to another member,
// as failover would. Members that are not probed (mode 1, or while Run
// does not run: [health] enabled = false) are left alone and get false.
// It never blocks: while an earlier report waits for the prober, later
// ones are dropped, since the prober counts consecutive failures, not
// connections.
func (c *Checker) DialFailed(k registry.Key, name string, err error) (failover bool) {
	c.mu.Lock()
	ch := c.observed[memberID{key: k, name: name}]
	c.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- err:
	default:
	}
	return true
}

// conclusive reports whether a failed dial proves that nothing serves the
// backend: its host answered with a RST (refused, reset) or an ICMP
// unreachable. A timeout proves nothing by itself.
func conclusive(err error) bool {
	for _, e := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Run probes until ctx is done, then stops every prober and returns nil
// once all of them have exited. It follows the table: a member that joins a
// mode-2 binding gets a prober, one that leaves loses it, one whose backend
// changes gets a new one (with fresh counters). Run must not be called
// twice at once.
func (c *Checker) Run(ctx context.Context) error {
	probers := map[target]*prober{}
	defer func() {
		c.mu.Lock()
		clear(c.observed)
		c.mu.Unlock()
		for _, p := range probers {
			p.cancel()
		}
		for _, p := range probers {
			<-p.done
		}
	}()
	for {
		c.reconcile(ctx, probers)
		select {
		case <-ctx.Done():
			return nil
		case <-c.changed:
		}
	}
}

// reconcile makes probers match the current table.
func (c *Checker) reconcile(ctx context.Context, probers map[target]*prober) {
	want := c.targets(c.reg.Table())
	for t, p := range probers {
		if _, ok := want[t]; !ok {
			c.mu.Lock()
			if id := t.id(); c.observed[id] == p.observed {
				delete(c.observed, id)
			}
			c.mu.Unlock()
			p.cancel()
			<-p.done
			delete(probers, t)
		}
	}
	for t := range want {
		if _, ok := probers[t]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		p := &prober{cancel: cancel, done: make(chan struct{}), observed: make(chan error, 1)}
		probers[t] = p
		go func() {
			defer close(p.done)
			c.probeLoop(pctx, t, p.observed)
		}()
		c.mu.Lock()
		c.observed[t.id()] = p.observed
		c.mu.Unlock()
	}
}

// id is the member that t probes.
func (t target) id() memberID { return memberID{key: t.key, name: t.name} }

// targets returns every mode-2 member of tbl as a target.
func (c *Checker) targets(tbl *registry.Table) map[target]struct{} {
	out := map[target]struct{}{}
	// Only mode-2 bindings are probed; PortBindings keeps them apart, so a
	// change costs the number of ports, not the number of mode-1 IPs.
	for _, b := range tbl.PortBindings() {
		s := c.Settings(b.Port)
		for _, m := range b.Members {
			addr := m.Backend
			if addr.Port() == 0 {
				addr = netip.AddrPortFrom(addr.Addr(), b.Port)
			}
			out[target{key: b.Key, name: m.Name, addr: addr, settings: s}] = struct{}{}
		}
	}
	return out
}

// probeLoop probes t every Interval, the first time at once, until ctx is
// done. Between probes it takes the failed client dials that observed
// receives as check results: a conclusive one (see conclusive) marks t
// down at once, another counts as one failed probe.
func (c *Checker) probeLoop(ctx context.Context, t target, observed <-chan error) {
	tick := time.NewTicker(t.settings.Interval)
	defer tick.Stop()
	var oks, fails int
	for {
		err := c.probe(ctx, t)
		if ctx.Err() != nil {
			return // a probe cut short by shutdown says nothing
		}
		if err == nil {
			oks, fails = oks+1, 0
			if oks >= t.settings.Rise {
				c.report(t, true, nil)
			}
		} else {
			oks, fails = 0, fails+1
			if fails >= t.settings.Fall {
				c.report(t, false, err)
			}
		}
	wait: // for the next probe, taking observed failures meanwhile
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-observed:
				oks, fails = 0, fails+1
				if conclusive(err) {
					fails = max(fails, t.settings.Fall)
				}
				if fails >= t.settings.Fall {
					c.report(t, false, fmt.Errorf("%s%w", ReasonObservedPrefix, err))
				}
			case <-tick.C:
				break wait
			}
		}
	}
}

// probe connects to t's backend and closes the connection.
func (c *Checker) probe(ctx context.Context, t target) error {
	ctx, cancel := context.WithTimeout(ctx, t.settings.Timeout)
	defer cancel()
	start := time.Now()
	conn, err := c.dial(ctx, "tcp", t.addr.String())
	if c.observe != nil {
		c.observe(time.Since(start))
	}
	if err != nil {
		return err
	}
	conn.Close()
	return nil
}

// report tells the registry that t is up or down, if the table says
// otherwise. A member that its lease marked down is left to the lease:
// only a member down by its health check is reported up. The table read
// here may be stale by the time SetHealth runs (a lease may run out in
// between); SetHealth decides on the table it changes, and never brings up
// a member that its lease marked down.
func (c *Checker) report(t target, up bool, probeErr error) {
	b, ok := c.reg.Table().Binding(t.key)
	if !ok {
		return
	}
	m, ok := b.Member(t.name)
	if !ok {
		return
	}
	var why string
	switch {
	case up && m.Down && m.DownCause == registry.DownHealth:
		why = ReasonPassed
	case !up && !m.Down:
		why = ReasonFailedPrefix + probeErr.Error()
	default:
		return
	}
	if err := c.reg.SetHealth(t.key, t.name, up, why); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return // removed since; the next reconcile stops this prober
		}
		c.log.Error("health: report", "binding", t.key.String(), "member", t.name, "up", up, "err", err)
		return
	}
	level := slog.LevelInfo // a member that comes up
	if !up {
		level = slog.LevelWarn
	}
	c.log.Log(context.Background(), level, "health check", "binding", t.key.String(), "member", t.name, "backend", t.addr.String(), "up", up, "why", why)
}

// ReasonDisabled is the Reason of a member that Release brought up.
const ReasonDisabled = "health checks disabled"

// Release marks up every member that a health check marked down, and
// returns how many. Call it when health checks are turned off (and no
// Checker runs): nothing would bring such members up any more. Members
// that their lease marked down stay down.
func Release(reg *registry.Registry) (int, error) {
	n := 0
	var errs []error
	for _, b := range reg.Table().Bindings() {
		for _, m := range b.Members {
			if m.DownCause != registry.DownHealth {
				continue
			}
			err := reg.SetHealth(b.Key, m.Name, true, ReasonDisabled)
			switch {
			case errors.Is(err, registry.ErrNotFound):
			case err != nil:
				errs = append(errs, fmt.Errorf("release %s in %s: %w", m.Name, b.Key, err))
			default:
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

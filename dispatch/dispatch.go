// Package dispatch is vipmux's TCP forwarder. For every SYN that the stack
// hands it, it looks the destination up in the registry's table, dials the
// backend first and only then completes the client's handshake (or answers
// RST at once when there is no active member or the backend cannot be
// reached), splices the two connections both ways with half-close, and
// tracks the connection until both sides are done.
//
// On a mode-2 port, a connection whose backend dial fails is dialled to
// the binding's next healthy member before the client's handshake
// completes (redispatch), and the failed dial is reported to the health
// checker (passive checking), so that a dead active member costs the
// client nothing.
//
// Under pressure it stops dialling first: while more handshakes are in
// flight than Limits.HandshakeFirstAbove, a new client's handshake is
// completed before its backend is dialled, so that a backend sees a
// connection only for a client that proved it is there. Every handshake
// is bounded by Limits.HandshakeTimeout, one source address (an IPv6 /64)
// holds at most Limits.MaxInFlightPerSource of them, at most
// Limits.MaxConnections connections are proxied at once, and one that
// carries no byte for Limits.IdleTimeout is closed (docs/hardening.md).
//
// It owns the goroutines of proxied connections: two per connection, both
// stopped by Close; and one sweeper, which ends overdue handshakes and
// idle connections.
//
//	f := dispatch.New(dispatch.Options{Table: reg, DialTimeout: 3 * time.Second, Logger: log})
//	st.HandleTCP(8192, f.Handle)
//	defer f.Close()
package dispatch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Table finds the member that a connection to (ip, port) goes to;
// *registry.Registry implements it without taking a lock.
type Table interface {
	// Lookup returns the member that a new connection to (ip, port) goes
	// to, and the binding it belongs to; dispatch calls it on every SYN.
	Lookup(ip netip.Addr, port uint16) (registry.Member, registry.Key, bool)
	// Table returns the newest snapshot of the table. Dispatch reads it
	// only after a failed dial, to find the member to redispatch to.
	Table() *registry.Table
}

// Observer learns of every failed backend dial: the passive half of health
// checking (HAProxy's "observe layer4"), and the owner of automatic
// failover. *health.Checker implements it.
//
// DialFailed is told that a client connection's dial to member of binding
// k failed with err (refused, reset, unreachable, or a timeout). It
// answers whether the member is under automatic failover: then the
// connection is redispatched to the binding's next healthy member;
// otherwise the client gets a RST, as without an Observer. It runs on the
// SYN's goroutine, between the failed dial and the next: it must return at
// once, and must not call back into the forwarder.
type Observer interface {
	DialFailed(k registry.Key, member string, err error) (failover bool)
}

// Keepalive settings of the client side: peers that vanish must not hold a
// connection and its goroutines for hours.
const (
	keepaliveIdle     = 60 * time.Second
	keepaliveInterval = 15 * time.Second
	keepaliveCount    = 4
)

// Each direction of a connection copies through a small buffer, and through
// a large one while reads fill the small one (a bulk transfer). The large
// one goes back to its pool as soon as a read returns less than a small
// buffer's worth: an idle connection holds 2 x smallBufferSize, not two
// large buffers (10,000 idle connections held 1.3 GB of Go heap that way,
// and the heap target that GOGC derives from it let the gateway's RSS grow
// to 2 GB afterwards).
const (
	smallBufferSize = 4 << 10
	largeBufferSize = 64 << 10
)

// DefaultDialTimeout is how long Handle waits for a backend when
// Options.DialTimeout is zero.
const DefaultDialTimeout = 3 * time.Second

// errMemberDown is the cause of a dial cut short because the table marked
// its member down meanwhile (see dialScope).
var errMemberDown = errors.New("member marked down during the dial")

// dialScope is the context that the dials to one mode-2 member derive
// from. Prune cancels it, with cause errMemberDown, when the table marks
// the member down (or removes it) while another member of the binding is
// up: a dial that waits on a silent backend then ends with the health
// check's verdict instead of the dial timeout, and its connection is
// redispatched. A member that comes back up gets a new scope.
type dialScope struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// Outcome is what became of a SYN: not errors, counted.
type Outcome int

// Outcomes of Handle.
const (
	// Proxied: the backend accepted and the client's handshake completed.
	Proxied Outcome = iota
	// NoRoute: no binding or no active member; the client got a RST.
	NoRoute
	// Refused: the backend refused or could not be reached, or did not
	// take the member's PROXY protocol header; RST.
	Refused
	// DialTimeout: the backend did not answer within the dial timeout, or
	// its member was marked down while the dial waited; RST.
	DialTimeout
	// HandshakeFailed: the client's handshake could not be completed: the
	// client went away, or did not complete it within the handshake
	// timeout.
	HandshakeFailed
	// MaxConnections: Limits.MaxConnections connections were proxied
	// already; RST.
	MaxConnections
	// SourceLimit: the client's source address (IPv6: its /64) had
	// Limits.MaxInFlightPerSource handshakes in flight already; the SYN
	// is dropped without an answer, as a full SYN queue drops it, and the
	// client retransmits it.
	SourceLimit
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"proxied", "no_route", "refused", "dial_timeout", "handshake_failed", "max_connections", "source_limit"}

// String returns the outcome's name as used in logs and metrics.
func (o Outcome) String() string {
	if o < 0 || o >= numOutcomes {
		return "unknown"
	}
	return outcomeNames[o]
}

// Defaults of Limits' zero values.
const (
	// DefaultHandshakeTimeout is Limits.HandshakeTimeout's zero value:
	// how long a client may take to answer the SYN-ACK.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultHandshakeFirstAbove is Limits.HandshakeFirstAbove's zero
	// value.
	DefaultHandshakeFirstAbove = 256
)

// sweepInterval is how often the sweeper looks for overdue handshakes:
// a handshake ends at most this long after its timeout.
const sweepInterval = 250 * time.Millisecond

// maxIdleScan is the longest pause between two scans for idle
// connections: an idle connection is closed at most this long (or a
// quarter of the idle timeout, whichever is less) after its timeout.
const maxIdleScan = 5 * time.Second

// Limits bound what clients can make the forwarder hold. SetLimits
// changes them while it runs; a change applies to the SYNs that follow,
// and the idle timeout to every connection's next check.
type Limits struct {
	// HandshakeTimeout bounds the wait for a client's answer to the
	// SYN-ACK (gVisor alone resends it for about 127 s); zero means
	// DefaultHandshakeTimeout. A client that does not complete its
	// handshake in time gets a RST, and its backend connection, if one
	// was dialled, is closed.
	HandshakeTimeout time.Duration
	// HandshakeFirstAbove is how many handshakes may be in flight before
	// the forwarder stops dialling first: a SYN that arrives while as
	// many or more are in flight has its client's handshake completed
	// before the backend is dialled. It is therefore the bound on the
	// backend connections open at once for clients that have not
	// completed their handshake. Zero means DefaultHandshakeFirstAbove;
	// negative means always handshake first.
	HandshakeFirstAbove int
	// MaxInFlightPerSource caps the handshakes in flight from one source
	// address (an IPv6 /64); a SYN over it is dropped (SourceLimit).
	// Zero means no cap.
	MaxInFlightPerSource int
	// IdleTimeout closes, both ways, a proxied connection that carried no
	// byte in either direction for that long. Zero disables it.
	IdleTimeout time.Duration
	// MaxConnections caps the connections proxied at once; a SYN over it
	// gets a RST (MaxConnections). Zero means no cap. The handshakes in
	// flight when the cap is reached may still complete.
	MaxConnections int
}

// withDefaults returns l with its zero values replaced by the defaults.
func (l Limits) withDefaults() Limits {
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.HandshakeFirstAbove == 0 {
		l.HandshakeFirstAbove = DefaultHandshakeFirstAbove
	}
	return l
}

// Options configures New.
type Options struct {
	// Table is where connections are looked up. Required.
	Table Table
	// DialTimeout bounds the backend dial; zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// Dial dials a backend; nil means a net.Dialer. Tests use it to count or
	// fail dials.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives per-connection lines at debug level. Required.
	Logger *slog.Logger
	// Observer, when not nil, is told about every failed backend dial
	// (passive health checking) and decides whether the connection is
	// redispatched; the gateway gives it the health checker. Nil means no
	// redispatch: a failed dial answers the client with RST.
	Observer Observer
	// Limits bound handshakes and connections; see Limits for the zero
	// values.
	Limits Limits
	// ObserveDial, when not nil, is told how long each backend dial took,
	// successful or not (the metrics' dial histogram). It runs on the
	// SYN's goroutine and must return at once. Nil: the dial path does
	// not read the clock.
	ObserveDial func(time.Duration)
}

// memberKey identifies a member's counters.
type memberKey struct {
	key  registry.Key
	name string
}

// Forwarder proxies the stack's TCP connections to backends.
type Forwarder struct {
	table       Table
	dialTimeout atomic.Int64 // nanoseconds; see SetDialTimeout
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	log         *slog.Logger
	observer    Observer
	observeDial func(time.Duration)

	limits atomic.Pointer[Limits] // see SetLimits

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// epoch is the origin of the forwarder's clock (now); clock is that
	// clock as of the sweeper's last tick, which the copy loops read to
	// mark a connection active without a clock call per read.
	epoch time.Time
	clock atomic.Int64
	// idleClosed counts the connections that the idle timeout closed.
	idleClosed atomic.Uint64

	outcomes [numOutcomes]atomic.Uint64
	// redispatched counts the failed attempts that were followed by a
	// dial to another member of the binding.
	redispatched atomic.Uint64

	// members maps a memberKey to the *counters of every member that a
	// connection went (or was refused) to, and of bindings without an
	// active member (name ""); Prune forgets those whose member left the
	// table. Every SYN reads it without a lock (a member's entry is added
	// once and only Prune deletes it); mu serializes the adds and deletes,
	// so that mode2 stays in step.
	members sync.Map

	// mu guards the following fields.
	mu     sync.Mutex
	closed bool
	conns  map[*proxied]struct{}
	// pending are the SYNs between enter and their end (proxied or
	// refused): their handshakes in flight. sources counts them by source
	// (sourceKey).
	pending map[*pending]struct{}
	sources map[netip.Addr]int
	// mode2 are the entries of members that belong to mode-2 members:
	// those with a dial scope, which Prune keeps in step with the table.
	mode2 map[memberKey]*counters
}

// counters are one member's connection counters. A connection holds a
// pointer to its member's counters and updates them atomically, without
// the forwarder's lock.
type counters struct {
	outcomes [numOutcomes]atomic.Uint64
	// redispatched counts the connections whose attempt on this member
	// failed and that were dialled to another member instead.
	redispatched atomic.Uint64
	active       atomic.Int64
	toBackend    atomic.Uint64
	toClient     atomic.Uint64
	// scope is the member's dial scope; nil for mode-1 members, whose
	// dials derive from the forwarder's context.
	scope atomic.Pointer[dialScope]
}

// MemberStats are the connection counters of one member of a binding, as
// Stats returns them.
type MemberStats struct {
	// Binding is the binding that the connections were looked up in.
	Binding registry.Key
	// Member is the member's name; empty for the SYNs that found the
	// binding (or the address) without an active member.
	Member string
	// Outcomes counts the SYNs by what became of them; Proxied is the
	// number of accepted connections.
	Outcomes [numOutcomes]uint64
	// Redispatched is the number of connections whose dial to the member
	// failed and that were dialled to the binding's next healthy member
	// instead, before their client's handshake completed. Their outcome
	// is counted on the member that they ended with, not here.
	Redispatched uint64
	// Active is the number of live proxied connections.
	Active int64
	// BytesToBackend and BytesToClient are the bytes copied client to
	// backend and backend to client, counted as they are written.
	BytesToBackend, BytesToClient uint64
}

// New returns a Forwarder.
func New(opts Options) *Forwarder {
	f := &Forwarder{
		table:    opts.Table,
		dial:     opts.Dial,
		log:      opts.Logger,
		observer: opts.Observer,
		conns:    map[*proxied]struct{}{},
		pending:  map[*pending]struct{}{},
		sources:  map[netip.Addr]int{},
		mode2:    map[memberKey]*counters{},
		epoch:    time.Now(),
	}
	f.observeDial = opts.ObserveDial
	f.SetDialTimeout(opts.DialTimeout)
	f.SetLimits(opts.Limits)
	if f.dial == nil {
		// SO_KEEPALIVE and its idle time; the kernel's interval and
		// count. net.Dialer's KeepAlive would also set both of those:
		// two setsockopt per connection that change nothing that
		// matters (issue 14, lever 3; bench ONLY=syscalls).
		d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepaliveIdle, Interval: -1, Count: -1}}
		f.dial = d.DialContext
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.clock.Store(f.now())
	f.wg.Add(1)
	go f.sweep()
	return f
}

// Handle turns one SYN into a proxied connection or a RST. The stack calls
// it on a goroutine of its own; Handle returns when the connection is over.
//
// A SYN goes through four steps, each of which returns Proxied to go on
// or the outcome that refuses it: route (the table's member), enter (the
// limits), connect (the backend, with redispatch) and handshake (the
// client's side). Connect comes before handshake, unless enter found the
// forwarder under pressure (Limits.HandshakeFirstAbove). A refused SYN
// takes the one refusal path, refuse; an accepted one is proxied.
func (f *Forwarder) Handle(r *tcp.ForwarderRequest) {
	id := r.ID()
	a := attempt{
		src:   netip.AddrPortFrom(stack.FromAddr(id.RemoteAddress), id.RemotePort),
		front: netip.AddrPortFrom(stack.FromAddr(id.LocalAddress), id.LocalPort),
	}
	o := f.route(&a)
	if o == Proxied {
		o = f.enter(&a)
	}
	if a.hs != nil {
		defer f.wg.Done()
		switch {
		case a.handshakeFirst:
			o = f.handshake(r, &a)
			if o == Proxied {
				o = f.connect(&a)
			}
		default:
			o = f.connect(&a)
			if o == Proxied {
				o = f.handshake(r, &a)
			}
		}
	}
	if o != Proxied {
		f.refuse(r, &a, o)
		return
	}
	f.count(a.counters, Proxied)
	f.proxy(&a)
}

// attempt is what Handle's steps learn about one SYN on its way to a
// proxied connection. It lives on Handle's stack.
type attempt struct {
	// src is the client, front the address and port that it dialled.
	src, front netip.AddrPort
	// key is the binding that the SYN was looked up in, member the member
	// that it goes to (after a redispatch, the last one tried), counters
	// that member's; counters is nil until route has run.
	key      registry.Key
	member   registry.Member
	counters *counters
	// backend is the backend connection, once connect has dialled it.
	backend net.Conn
	// client and ep are the client's side, once handshake has completed it.
	client *gonet.TCPConn
	ep     tcpip.Endpoint
	// hs is the SYN's entry among the handshakes in flight, once enter
	// has admitted it; handshakeFirst says that enter found the
	// forwarder under pressure.
	hs             *pending
	handshakeFirst bool
	// why and err say why a step refused the SYN: the refusal's debug line.
	why string
	err error
}

// route looks the SYN's destination up in the table: Proxied with the
// member to dial, or NoRoute when the address or port has no binding or
// the binding no active member. Either way the SYN gets the counters of
// what it found.
func (f *Forwarder) route(a *attempt) Outcome {
	m, key, ok := f.table.Lookup(a.front.Addr(), a.front.Port())
	a.key, a.member = key, m
	a.counters = f.counters(memberKey{key: key, name: m.Name})
	if !ok {
		a.why = "no active member"
		return NoRoute
	}
	return Proxied
}

// connect dials the member's backend for the client connection and writes
// the member's PROXY protocol header: Proxied with a.backend set, or the
// outcome of the last failed attempt (Refused, DialTimeout).
//
// When a dial fails and the Observer answers that the member is under
// automatic failover, or the table marked the member down while the dial
// waited (see dialScope), it redispatches (HAProxy's "retries" with
// "option redispatch"): it dials the binding's other members that are up,
// the serving one first, then the others in the binding's order, each at
// most once, each attempt bounded by the dial timeout. The client's
// handshake is still pending meanwhile, so a redispatched client sees
// nothing of the failure. a.member and a.counters follow the member being
// tried; every attempt but the last one counts as a redispatch of its
// member.
//
// The success path of the first attempt costs nothing more than a dial:
// the table is only read again after a failure.
func (f *Forwarder) connect(a *attempt) Outcome {
	var tried []string // names of the members tried, once one failed
	for {
		o, failover := f.dialMember(a)
		if o == Proxied || !failover {
			return o
		}
		tried = append(tried, a.member.Name)
		next, ok := nextMember(f.table.Table(), a.key, tried)
		if !ok {
			return o
		}
		a.counters.redispatched.Add(1)
		f.redispatched.Add(1)
		if f.log.Enabled(context.Background(), slog.LevelDebug) {
			f.log.Debug("redispatching", "client", a.src, "binding", a.key, "failed_member", a.member.Name,
				"failed_backend", backendAddr(a.member, a.front.Port()), "failed_outcome", o, "err", a.err, "member", next.Name)
		}
		a.member, a.counters = next, f.counters(memberKey{key: a.key, name: next.Name})
		a.why, a.err = "", nil
	}
}

// dialMember dials a.member's backend and writes its PROXY protocol
// header: Proxied with a.backend set, or the outcome that the SYN would
// end in (Refused or DialTimeout), with a.why and a.err, and whether the
// connection may be redispatched: yes if the table marked the member down
// during the dial; otherwise it reports the failed dial to the Observer,
// which answers, unless the forwarder is closing (a dial cut short says
// nothing of the member).
func (f *Forwarder) dialMember(a *attempt) (o Outcome, failover bool) {
	m := a.member
	backend := backendAddr(m, a.front.Port())
	ctx, cancel := context.WithTimeout(f.dialParent(a.counters), time.Duration(f.dialTimeout.Load()))
	var start time.Time
	if f.observeDial != nil {
		start = time.Now()
	}
	bc, err := f.dial(ctx, "tcp", backend.String())
	if f.observeDial != nil {
		f.observeDial(time.Since(start))
	}
	cause := context.Cause(ctx)
	cancel()
	if err != nil {
		o = Refused
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			o = DialTimeout
		}
		switch {
		case f.ctx.Err() != nil:
			// Closing: a dial cut short says nothing of the member.
		case errors.Is(cause, errMemberDown):
			// The table marked the member down while the dial waited:
			// the health check has spoken, and another member is up.
			o, failover = DialTimeout, true
		case f.observer != nil:
			failover = f.observer.DialFailed(a.key, m.Name, err)
		}
		a.why, a.err = "backend dial failed", err
		return o, failover
	}
	if m.ProxyProtocol != registry.ProxyNone {
		// The header goes first, before the client's handshake completes:
		// a backend that cannot take it costs the client a RST, as a
		// refused dial does. It is no health failure (the backend did
		// accept the connection), and a member that takes no header is
		// misconfigured, not dead: no redispatch.
		if err := writeProxyHeader(bc, m.ProxyProtocol, a.src, a.front, time.Now().Add(f.DialTimeout())); err != nil {
			bc.Close()
			a.why, a.err = "backend refused the PROXY protocol header", err
			return Refused, false
		}
	}
	a.backend = bc
	return Proxied, false
}

// pending is one SYN's handshake in flight.
type pending struct {
	// wq is the client endpoint's waiter queue. gVisor's CreateEndpoint
	// blocks until it is notified writable; the sweeper and Close notify
	// it to end a handshake that is overdue or no longer wanted.
	wq waiter.Queue
	// src is the source that the SYN counts against (sourceKey).
	src netip.Addr
	// since is when the SYN-ACK went out (the forwarder's clock, now);
	// zero while no handshake waits.
	since atomic.Int64
}

// sourceKey is the key that a client's handshakes are counted by: its
// address, or for IPv6 its /64, which one host commonly holds whole.
func sourceKey(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a.Unmap()
}

// enter admits the SYN under the forwarder's limits: Proxied with a.hs
// set (counted in the WaitGroup until Handle returns), or the outcome
// that refuses it: NoRoute once the forwarder is closed, MaxConnections,
// SourceLimit. It decides whether the handshake comes first
// (a.handshakeFirst).
func (f *Forwarder) enter(a *attempt) Outcome {
	l := f.limits.Load()
	src := sourceKey(a.src.Addr())
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		a.why = "forwarder closed"
		return NoRoute
	case l.MaxConnections > 0 && len(f.conns) >= l.MaxConnections:
		a.why = "max_connections reached"
		return MaxConnections
	case l.MaxInFlightPerSource > 0 && f.sources[src] >= l.MaxInFlightPerSource:
		a.why = "max_in_flight_per_source reached"
		return SourceLimit
	}
	a.handshakeFirst = l.HandshakeFirstAbove < 0 || len(f.pending) >= l.HandshakeFirstAbove
	a.hs = &pending{src: src}
	f.pending[a.hs] = struct{}{}
	f.sources[src]++
	f.wg.Add(1)
	return Proxied
}

// leaveLocked removes hs from the handshakes in flight. f.mu is held.
func (f *Forwarder) leaveLocked(hs *pending) {
	if _, ok := f.pending[hs]; !ok {
		return
	}
	delete(f.pending, hs)
	if n := f.sources[hs.src] - 1; n > 0 {
		f.sources[hs.src] = n
	} else {
		delete(f.sources, hs.src)
	}
}

// handshake completes the client's handshake: Proxied with a.client and
// a.ep set, or HandshakeFailed when the client went away, did not answer
// within the handshake timeout (the sweeper ends the wait), or the
// forwarder closed.
func (f *Forwarder) handshake(r *tcp.ForwarderRequest, a *attempt) Outcome {
	hs := a.hs
	hs.since.Store(f.now())
	// Close notifies every handshake in flight until Handle returns; one
	// that starts after Close began is refused here.
	if f.ctx.Err() != nil {
		a.why = "forwarder closed"
		return HandshakeFailed
	}
	ep, terr := r.CreateEndpoint(&hs.wq)
	hs.since.Store(0)
	if terr != nil {
		a.why, a.err = "client handshake failed", errors.New(terr.String())
		return HandshakeFailed
	}
	r.Complete(false)
	setClientOptions(ep)
	a.client, a.ep = gonet.NewTCPConn(&hs.wq, ep), ep
	return Proxied
}

// refuse is the one end of a refused SYN: it counts outcome o (on the
// member's counters when route found any), answers the client with RST
// (resets its connection if the handshake completed first; drops the SYN
// silently for SourceLimit), closes the backend connection if one was
// dialled, removes the SYN from the handshakes in flight, and logs one
// debug line saying why.
func (f *Forwarder) refuse(r *tcp.ForwarderRequest, a *attempt, o Outcome) {
	f.count(a.counters, o)
	if a.client != nil {
		a.ep.Abort()
		a.client.Close()
	} else {
		r.Complete(o != SourceLimit)
	}
	if a.backend != nil {
		a.backend.Close()
	}
	if a.hs != nil {
		f.mu.Lock()
		f.leaveLocked(a.hs)
		f.mu.Unlock()
	}
	// Per-connection lines are debug only; the check keeps the arguments
	// from being built when debug is off.
	if !f.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	args := []any{"client", a.src, "dst", a.front, "outcome", o}
	if a.counters != nil {
		args = append(args, "binding", a.key)
	}
	if a.member.Name != "" {
		args = append(args, "member", a.member.Name, "backend", backendAddr(a.member, a.front.Port()))
	}
	if a.err != nil {
		args = append(args, "err", a.err)
	}
	f.log.Debug(a.why, args...)
}

// proxy splices an accepted connection until both sides are done, tracked
// so that Prune and Close can end it.
func (f *Forwarder) proxy(a *attempt) {
	p := &proxied{client: a.client, ep: a.ep, backend: a.backend, member: memberKey{key: a.key, name: a.member.Name}, counters: a.counters, clock: &f.clock}
	if !f.track(p, a.hs) {
		p.close()
		return
	}
	defer f.untrack(p)
	// Per-connection lines are debug only; the check keeps the arguments
	// from being built when debug is off.
	debug := f.log.Enabled(context.Background(), slog.LevelDebug)
	var start time.Time
	if debug {
		start = time.Now()
		f.log.Debug("connection accepted", "client", a.src, "binding", a.key, "member", a.member.Name, "backend", backendAddr(a.member, a.front.Port()))
	}
	toBackend, toClient := p.splice()
	if debug {
		f.log.Debug("connection closed", "client", a.src, "binding", a.key, "member", a.member.Name, "backend", backendAddr(a.member, a.front.Port()),
			"bytes_to_backend", toBackend, "bytes_to_client", toClient, "duration", time.Since(start))
	}
}

// nextMember returns the member that a connection to binding k goes to
// after its dials to the members named in tried failed: the serving
// member if it was not tried (after a failover, that is the new active),
// else the first member in the binding's order that is up and was not
// tried. A member that is down (health check, lease) is never chosen.
func nextMember(t *registry.Table, k registry.Key, tried []string) (registry.Member, bool) {
	b, ok := t.Binding(k)
	if !ok {
		return registry.Member{}, false
	}
	if m, ok := b.Serving(); ok && !slices.Contains(tried, m.Name) {
		return m, true
	}
	for _, m := range b.Members {
		if !m.Down && !slices.Contains(tried, m.Name) {
			return m, true
		}
	}
	return registry.Member{}, false
}

// backendAddr is m's backend for a connection to port: a backend port of
// 0 means the port that the client dialled.
func backendAddr(m registry.Member, port uint16) netip.AddrPort {
	if m.Backend.Port() == 0 {
		return netip.AddrPortFrom(m.Backend.Addr(), port)
	}
	return m.Backend
}

// SetDialTimeout changes Options.DialTimeout for the SYNs that follow;
// zero or less means DefaultDialTimeout.
func (f *Forwarder) SetDialTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultDialTimeout
	}
	f.dialTimeout.Store(int64(d))
}

// DialTimeout returns the backend dial's limit in force.
func (f *Forwarder) DialTimeout() time.Duration { return time.Duration(f.dialTimeout.Load()) }

// Conns returns the number of live connections of member name in binding
// k. It implements control.Conns.
func (f *Forwarder) Conns(k registry.Key, name string) int64 {
	c, ok := f.members.Load(memberKey{key: k, name: name})
	if !ok {
		return 0
	}
	return c.(*counters).active.Load()
}

// Stats returns the counters of every member that connections went (or
// were refused) to and that is still in the table, in no particular
// order. The counters of a member that leaves the table are dropped (see
// Prune); they start from zero if it comes back.
func (f *Forwarder) Stats() []MemberStats {
	out := []MemberStats{}
	f.members.Range(func(k, v any) bool {
		mk, c := k.(memberKey), v.(*counters)
		s := MemberStats{Binding: mk.key, Member: mk.name}
		for o := range numOutcomes {
			s.Outcomes[o] = c.outcomes[o].Load()
		}
		s.Redispatched = c.redispatched.Load()
		s.Active = c.active.Load()
		s.BytesToBackend = c.toBackend.Load()
		s.BytesToClient = c.toClient.Load()
		out = append(out, s)
		return true
	})
	return out
}

// Active returns the number of proxied connections open now.
func (f *Forwarder) Active() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// Outcomes returns how many SYNs ended in each outcome.
func (f *Forwarder) Outcomes() map[Outcome]uint64 {
	out := make(map[Outcome]uint64, numOutcomes)
	for o := range numOutcomes {
		out[o] = f.outcomes[o].Load()
	}
	return out
}

// Redispatched returns how many connection attempts failed and were
// followed by a dial to another member of the binding (see
// MemberStats.Redispatched).
func (f *Forwarder) Redispatched() uint64 { return f.redispatched.Load() }

// SetLimits changes the forwarder's limits (see Limits) for the SYNs that
// follow; the idle timeout applies to every connection from the next
// scan.
func (f *Forwarder) SetLimits(l Limits) {
	l = l.withDefaults()
	f.limits.Store(&l)
}

// Limits returns the limits in force, defaults filled in.
func (f *Forwarder) Limits() Limits { return *f.limits.Load() }

// IdleClosed returns how many connections the idle timeout closed.
func (f *Forwarder) IdleClosed() uint64 { return f.idleClosed.Load() }

// InFlight returns the number of handshakes in flight: SYNs admitted and
// not yet proxied or refused.
func (f *Forwarder) InFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// now is the time since the forwarder's epoch, in nanoseconds: never
// zero, so that zero can mean "not set".
func (f *Forwarder) now() int64 { return int64(time.Since(f.epoch)) + 1 }

// sweep is the forwarder's one timer goroutine. Every sweepInterval it
// advances the coarse clock, ends the handshakes that waited longer than
// the handshake timeout (their CreateEndpoint returns an error: the
// client gets a RST, a backend connection dialled for it is closed), and,
// every idle scan interval, closes the connections idle for longer than
// the idle timeout. It returns when the forwarder closes.
func (f *Forwarder) sweep() {
	defer f.wg.Done()
	tick := time.NewTicker(sweepInterval)
	defer tick.Stop()
	var (
		wake     []*pending
		idle     []*proxied
		nextScan int64
	)
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-tick.C:
		}
		now := f.now()
		f.clock.Store(now)
		l := f.limits.Load()
		wake, idle = wake[:0], idle[:0]
		f.mu.Lock()
		for hs := range f.pending {
			if s := hs.since.Load(); s != 0 && now-s >= int64(l.HandshakeTimeout) {
				wake = append(wake, hs)
			}
		}
		if l.IdleTimeout > 0 && now >= nextScan {
			nextScan = now + int64(max(sweepInterval, min(l.IdleTimeout/4, maxIdleScan)))
			// A connection's last activity is the coarse clock, up to one
			// tick behind the read that set it: one tick of grace, so that
			// none is closed early.
			for p := range f.conns {
				if now-p.last.Load() > int64(l.IdleTimeout+sweepInterval) {
					idle = append(idle, p)
				}
			}
		}
		f.mu.Unlock()
		for _, hs := range wake {
			hs.wq.Notify(waiter.WritableEvents)
		}
		for _, p := range idle {
			f.idleClosed.Add(1)
			p.close()
		}
		clear(wake)
		clear(idle)
	}
}

// Close refuses new connections, closes every proxied one, ends the
// handshakes in flight and waits for their goroutines. It does not wait
// for a client's handshake: those in flight end at once (RST). It is
// idempotent.
func (f *Forwarder) Close() {
	f.mu.Lock()
	f.closed = true
	f.cancel()
	// Collected under the lock, closed after it: closing a connection
	// takes gVisor's and the kernel's locks, and the SYNs and connections
	// that end meanwhile need f.mu (untrack). No connection is tracked
	// once closed is set.
	conns := make([]*proxied, 0, len(f.conns))
	for p := range f.conns {
		conns = append(conns, p)
	}
	f.mu.Unlock()
	for _, p := range conns {
		p.close()
	}
	// A handshake waits in gVisor until its waiter queue is notified.
	// Notified again until every Handle has returned: one may have been
	// between its check of f.ctx and the wait when it was last notified.
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	for {
		f.wakePending()
		select {
		case <-done:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// wakePending notifies the waiter queue of every handshake in flight,
// which ends those that wait (see pending.wq).
func (f *Forwarder) wakePending() {
	f.mu.Lock()
	wake := make([]*pending, 0, len(f.pending))
	for hs := range f.pending {
		wake = append(wake, hs)
	}
	f.mu.Unlock()
	for _, hs := range wake {
		hs.wq.Notify(waiter.WritableEvents)
	}
}

// count counts a SYN's outcome, in total and, with c, for its member.
func (f *Forwarder) count(c *counters, o Outcome) {
	f.outcomes[o].Add(1)
	if c != nil {
		c.outcomes[o].Add(1)
	}
}

// counters returns mk's counters, creating them on first use. Every SYN
// calls it: after a member's first connection it takes no lock.
func (f *Forwarder) counters(mk memberKey) *counters {
	if c, ok := f.members.Load(mk); ok {
		return c.(*counters)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.members.Load(mk); ok {
		return c.(*counters)
	}
	c := &counters{}
	if mk.key.Port != 0 && mk.name != "" {
		c.scope.Store(f.newScope())
		f.mode2[mk] = c
	}
	f.members.Store(mk, c)
	return c
}

// newScope returns a dial scope under the forwarder's context.
func (f *Forwarder) newScope() *dialScope {
	ctx, cancel := context.WithCancelCause(f.ctx)
	return &dialScope{ctx: ctx, cancel: cancel}
}

// dialParent returns the context that a dial to c's member derives from.
func (f *Forwarder) dialParent(c *counters) context.Context {
	if s := c.scope.Load(); s != nil {
		return s.ctx
	}
	return f.ctx
}

// scopesLocked keeps the dial scopes of mode-2 members in step with next:
// it cancels the scope of a member that next does not have up, when
// another member of its binding is up (with none, a pending dial may
// still succeed, and is left alone), and gives a member that is up again
// a new scope. f.mu is held.
func (f *Forwarder) scopesLocked(next *registry.Table) {
	for mk, c := range f.mode2 {
		s := c.scope.Load()
		b, ok := next.Binding(mk.key)
		if !ok {
			s.cancel(errMemberDown)
			continue
		}
		up, otherUp := false, false
		for _, m := range b.Members {
			switch {
			case m.Down:
			case m.Name == mk.name:
				up = true
			default:
				otherUp = true
			}
		}
		switch {
		case !up && otherUp && s.ctx.Err() == nil:
			s.cancel(errMemberDown)
		case up && s.ctx.Err() != nil && f.ctx.Err() == nil:
			c.scope.Store(f.newScope())
		}
	}
}

// Prune cuts short the pending backend dials of a mode-2 member that next
// marks down (see dialScope), and aborts (RST both ways) every connection
// whose member next no longer has: a deregistered server's connections end at once instead of
// hanging on an address that is about to go away. A switch keeps every
// member, so established connections survive it. A member that is
// draining (registry.Drain) keeps its connections until the registry ends
// the drain; the table holds its address until then. Prune also forgets
// the counters (Stats) of members that left. Give Prune to registry.Watch.
func (f *Forwarder) Prune(prev, next *registry.Table) {
	// Aborted after the lock is released (see Close), in the order
	// collected.
	for _, p := range f.pruneTable(prev, next) {
		p.abort()
	}
}

// pruneTable does Prune's work under f.mu, which it takes, and returns
// the connections to abort.
func (f *Forwarder) pruneTable(prev, next *registry.Table) []*proxied {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scopesLocked(next)
	if !registry.MembersLeft(prev, next) {
		return nil // renewals, health reports, switches: no connection to end
	}
	var gone []*proxied
	for p := range f.conns {
		if !inTable(next, p.member) {
			gone = append(gone, p)
		}
	}
	f.members.Range(func(k, _ any) bool {
		mk := k.(memberKey)
		if mk.name == "" {
			// Refusals without a member: kept while the address is held.
			if next.Holds(mk.key.IP) {
				return true
			}
		} else if inTable(next, mk) {
			return true
		}
		if c := f.mode2[mk]; c != nil {
			c.scope.Load().cancel(errMemberDown)
			delete(f.mode2, mk)
		}
		f.members.Delete(mk)
		return true
	})
	return gone
}

// inTable reports whether mk is a member of t, or a member whose drain
// still runs.
func inTable(t *registry.Table, mk memberKey) bool {
	return t.MemberOrDraining(mk.key, mk.name)
}

// track registers p, whose handshake hs is no longer in flight; it
// reports false when the forwarder is closing.
func (f *Forwarder) track(p *proxied, hs *pending) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaveLocked(hs)
	if f.closed {
		return false
	}
	p.last.Store(f.clock.Load())
	f.conns[p] = struct{}{}
	p.counters.active.Add(1)
	return true
}

func (f *Forwarder) untrack(p *proxied) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, p)
	p.counters.active.Add(-1)
}

// setClientOptions sets keepalive and no-delay on the client side.
func setClientOptions(ep tcpip.Endpoint) {
	so := ep.SocketOptions()
	so.SetKeepAlive(true)
	so.SetDelayOption(false)
	idle := tcpip.KeepaliveIdleOption(keepaliveIdle)
	intvl := tcpip.KeepaliveIntervalOption(keepaliveInterval)
	_ = ep.SetSockOpt(&idle)
	_ = ep.SetSockOpt(&intvl)
	_ = ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveCount)
}

// proxied is one client connection and its backend connection.
type proxied struct {
	client  *gonet.TCPConn
	ep      tcpip.Endpoint // client's endpoint, for Abort
	backend net.Conn
	member  memberKey
	// counters are the member's; the copy loops add their bytes.
	counters *counters
	// last is when a byte last crossed either way (the forwarder's coarse
	// clock, which clock points to); the copy loops set it, the sweeper
	// reads it for the idle timeout.
	last  atomic.Int64
	clock *atomic.Int64

	closeOnce sync.Once
	// eofs counts the directions that ended at an EOF (see pipe).
	eofs atomic.Int32
}

// halfCloser is a connection that can close its write side alone.
type halfCloser interface {
	CloseWrite() error
}

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBufferSize); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBufferSize); return &b }}
)

// splice copies both ways until both directions are done and returns the
// bytes copied each way. An EOF in one direction half-closes the other
// side's write side; an error in either aborts both.
func (p *proxied) splice() (toBackend, toClient uint64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if toBackend, err = pipe(p.backend, p.client, &p.counters.toBackend, &p.last, p.clock, &p.eofs); err != nil {
			p.close() // unblock the other direction
		}
	}()
	toClient, err := pipe(p.client, p.backend, &p.counters.toClient, &p.last, p.clock, &p.eofs)
	if err != nil {
		p.close()
	}
	<-done
	p.close()
	return toBackend, toClient
}

// abort resets both sides at once; the copy goroutines then end.
func (p *proxied) abort() {
	p.ep.Abort()
	if tc, ok := p.backend.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	p.close()
}

func (p *proxied) close() {
	p.closeOnce.Do(func() {
		p.client.Close()
		p.backend.Close()
	})
}

// pipe copies src to dst until EOF, then half-closes dst, unless the
// other direction has ended at an EOF already (eofs, shared by both
// directions, reaches 2): then both sides have sent their FIN, splice
// closes both at once, and a close sends dst its FIN without the
// shutdown syscall (issue 14, lever 3). It adds the bytes written to
// total as it goes and returns their sum; after each read that returned
// bytes it sets last to clock's value. A nil error
// means a clean EOF. It reads into a small buffer, switching to a large
// one while reads fill the buffer and back when they do not (see
// smallBufferSize).
func pipe(dst, src net.Conn, total *atomic.Uint64, last, clock *atomic.Int64, eofs *atomic.Int32) (uint64, error) {
	small := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(small)
	var large *[]byte
	defer func() {
		if large != nil {
			largeBufs.Put(large)
		}
	}()
	buf := *small
	var sum uint64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			last.Store(clock.Load())
			w, werr := dst.Write(buf[:n])
			sum += uint64(w)
			total.Add(uint64(w))
			if werr != nil {
				return sum, werr
			}
		}
		switch {
		case large == nil && n == len(buf):
			large = largeBufs.Get().(*[]byte)
			buf = *large
		case large != nil && n < smallBufferSize:
			largeBufs.Put(large)
			large = nil
			buf = *small
		}
		if rerr == io.EOF {
			if eofs.Add(1) == 2 {
				return sum, nil
			}
			if hc, ok := dst.(halfCloser); ok {
				if err := hc.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
					return sum, err
				}
			}
			return sum, nil
		}
		if rerr != nil {
			return sum, rerr
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.ETIMEDOUT)
}

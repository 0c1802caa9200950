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
// It owns the goroutines of proxied connections: two per connection, both
// stopped by Close.
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
	// HandshakeFailed: the backend was dialled but the client's handshake
	// could not be completed (the client went away).
	HandshakeFailed
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"proxied", "no_route", "refused", "dial_timeout", "handshake_failed"}

// String returns the outcome's name as used in logs and metrics.
func (o Outcome) String() string {
	if o < 0 || o >= numOutcomes {
		return "unknown"
	}
	return outcomeNames[o]
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

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

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
		mode2:    map[memberKey]*counters{},
	}
	f.observeDial = opts.ObserveDial
	f.SetDialTimeout(opts.DialTimeout)
	if f.dial == nil {
		d := &net.Dialer{KeepAlive: keepaliveIdle}
		f.dial = d.DialContext
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f
}

// Handle turns one SYN into a proxied connection or a RST. The stack calls
// it on a goroutine of its own; Handle returns when the connection is over.
//
// A SYN goes through three steps, each of which returns Proxied to go on
// or the outcome that refuses it: route (the table's member), connect (the
// backend, with redispatch) and handshake (the client's side). A refused
// SYN takes the one refusal path, refuse; an accepted one is proxied.
func (f *Forwarder) Handle(r *tcp.ForwarderRequest) {
	id := r.ID()
	a := attempt{
		src:   netip.AddrPortFrom(stack.FromAddr(id.RemoteAddress), id.RemotePort),
		front: netip.AddrPortFrom(stack.FromAddr(id.LocalAddress), id.LocalPort),
	}
	if !f.enter() {
		a.why = "forwarder closed"
		f.refuse(r, &a, NoRoute)
		return
	}
	defer f.wg.Done()
	o := f.route(&a)
	if o == Proxied {
		o = f.connect(&a)
	}
	if o == Proxied {
		o = f.handshake(r, &a)
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

// handshake completes the client's handshake: Proxied with a.client and
// a.ep set, or HandshakeFailed when the client went away.
func (f *Forwarder) handshake(r *tcp.ForwarderRequest, a *attempt) Outcome {
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		a.why, a.err = "client handshake failed", errors.New(terr.String())
		return HandshakeFailed
	}
	r.Complete(false)
	setClientOptions(ep)
	a.client, a.ep = gonet.NewTCPConn(&wq, ep), ep
	return Proxied
}

// refuse is the one end of a refused SYN: it counts outcome o (on the
// member's counters when route found any), answers the client with RST,
// closes the backend connection if one was dialled, and logs one debug
// line saying why.
func (f *Forwarder) refuse(r *tcp.ForwarderRequest, a *attempt, o Outcome) {
	f.count(a.counters, o)
	r.Complete(true)
	if a.backend != nil {
		a.backend.Close()
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
	p := &proxied{client: a.client, ep: a.ep, backend: a.backend, member: memberKey{key: a.key, name: a.member.Name}, counters: a.counters}
	if !f.track(p) {
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

// Close refuses new connections, closes every proxied one and waits for
// their goroutines. It is idempotent.
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
	f.wg.Wait()
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

// enter counts a Handle in the WaitGroup unless the forwarder is closed.
func (f *Forwarder) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	return true
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

// track registers p; it reports false when the forwarder is closing.
func (f *Forwarder) track(p *proxied) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
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

	closeOnce sync.Once
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
		if toBackend, err = pipe(p.backend, p.client, &p.counters.toBackend); err != nil {
			p.close() // unblock the other direction
		}
	}()
	toClient, err := pipe(p.client, p.backend, &p.counters.toClient)
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

// pipe copies src to dst until EOF, then half-closes dst. It adds the
// bytes written to total as it goes and returns their sum. A nil error
// means a clean EOF. It reads into a small buffer, switching to a large
// one while reads fill the buffer and back when they do not (see
// smallBufferSize).
func pipe(dst, src net.Conn, total *atomic.Uint64) (uint64, error) {
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

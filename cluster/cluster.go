// Package cluster makes several vipmux gateways on one LAN share the
// holding of their IP addresses through etcd: each address of the shared
// table is held (answered for: ARP, NDP, IP) by exactly one live gateway,
// a dead gateway's addresses are taken over when its etcd lease ends, and a
// gateway that has lost etcd goes silent before its lease can have ended
// on the etcd side, so that two gateways never answer for one address.
//
// It owns, in etcd, one lease per gateway, the gateway's node key
// (<prefix>cluster/nodes/<node>) and its holder keys
// (<prefix>cluster/holders/<ip>, value the node name), all attached to
// that lease. It does not own the table of bindings (package etcdstore
// keeps that in etcd; the registry holds it in memory): it reads the
// table's addresses through Options.TableAddrs.
//
// A Cluster plays three parts for the rest of the gateway:
//
//   - stack.Holder (Holds): the stack holds only the table's addresses
//     that this gateway holds, and is told to follow (Stack.Rehold) when
//     that set changes;
//   - nic.Gate (Open): the front link is wrapped in a nic.Fence that drops
//     every ARP and IP frame, both ways, once the lease deadline has
//     passed, checked per frame on the monotonic clock;
//   - the source of `vipmux cluster status` (Status) and of the HOLDER
//     column (Holder).
//
// Usage (gateway.New's order):
//
//	cl, err := cluster.New(cluster.Options{Endpoints: eps, Node: "gw-a", Lease: 3 * time.Second, TableAddrs: addrs, Logger: log})
//	fence := nic.NewFence(link.Endpoint, cl)
//	st, err := stack.New(stack.Options{Link: fence, Holder: cl, ...})
//	reg.SetApplier(st)
//	reg.Watch(func(_, _ *registry.Table) { cl.TableChanged() })
//	err = cl.Start(ctx, st) // Close stops it
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Limits of Options.Lease.
const (
	MinLease = time.Second
	MaxLease = time.Minute
)

// What a gateway does when it loses etcd (Options.OnEtcdLoss).
const (
	// OnEtcdLossSilent stops answering for every held address before the
	// lease can have ended on the etcd side (the default).
	OnEtcdLossSilent = "silent"
	// OnEtcdLossKeep keeps answering for the held addresses: availability
	// over consistency. Another gateway that still reaches etcd takes the
	// addresses over when the lease ends, and both then answer (split
	// brain) until this one reaches etcd again.
	OnEtcdLossKeep = "keep"
)

// DefaultPrefix is the etcd key prefix of Options.Prefix.
const DefaultPrefix = "/vipmux/"

// Stack is what the cluster needs of the gateway's stack (*stack.Stack).
type Stack interface {
	// Rehold makes the stack hold exactly the table addresses that the
	// cluster's Holds accepts, probing new ones first; it returns those it
	// added, or a *stack.ConflictError when a probe was answered.
	Rehold() ([]netip.Addr, error)
	// Reannounce announces the addresses again, those still held.
	Reannounce([]netip.Addr)
}

// Options configures New.
type Options struct {
	// Endpoints are the etcd endpoints ([cluster] etcd). Required.
	Endpoints []string
	// TLS configures TLS to etcd ([cluster] etcd_ca, etcd_cert,
	// etcd_key); nil means plain connections.
	TLS *tls.Config
	// Node is this gateway's unique name ([cluster] node). Required.
	Node string
	// MAC is the front NIC's MAC address, shown by `vipmux cluster status`.
	MAC string
	// Control is the control API address, shown by `vipmux cluster status`.
	Control string
	// Lease is the TTL of the gateway's etcd lease ([cluster] lease): at
	// most this long after a gateway dies its addresses stay dark.
	// MinLease..MaxLease, whole seconds (etcd's lease TTLs are seconds; a
	// fraction is rounded up).
	Lease time.Duration
	// Placement is PlacementSpread (the default when empty) or
	// PlacementPriority ([cluster] placement).
	Placement string
	// Priority is the gateway's priority for PlacementPriority ([cluster]
	// priority).
	Priority int
	// Weight is the gateway's share for PlacementSpread; zero means 1.
	Weight float64
	// OnEtcdLoss is OnEtcdLossSilent (the default when empty) or
	// OnEtcdLossKeep ([cluster] on_etcd_loss).
	OnEtcdLoss string
	// Prefix is the etcd key prefix; empty means DefaultPrefix.
	Prefix string
	// TableAddrs returns the addresses of the shared table (the
	// registry's current table). Required.
	TableAddrs func() map[netip.Addr]struct{}
	// ReannounceAfter is how long after a takeover the taken addresses
	// are announced once more; zero means 3s.
	ReannounceAfter time.Duration
	// DialTimeout bounds each attempt to reach etcd; zero means 2s.
	DialTimeout time.Duration
	// Logger receives joins, takeovers, fencing and etcd trouble.
	// Required.
	Logger *slog.Logger
}

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrOptions reports an invalid Options field; the error names it.
	ErrOptions = errors.New("invalid cluster options")
	// ErrClosed reports a call on a closed Cluster.
	ErrClosed = errors.New("cluster closed")
	// ErrNotStarted reports a call that needs Start first.
	ErrNotStarted = errors.New("cluster not started")
)

// Cluster is one gateway's membership in the cluster.
type Cluster struct {
	opts   Options
	log    *slog.Logger
	ttl    int64 // lease TTL asked for, seconds
	keep   bool  // OnEtcdLossKeep
	prefix string

	// base is the origin of the monotonic times below.
	base time.Time
	// deadline is the monotonic time (ns since base) until which the
	// gateway may answer; Open compares it per frame.
	deadline atomic.Int64
	// held is the set of addresses this gateway holds under its current
	// lease; Holds reads it on the stack's paths without a lock.
	held atomic.Pointer[map[netip.Addr]struct{}]
	// wake has room for one signal: the table or the view changed.
	wake chan struct{}
	// stale are leases of ended sessions that are still to be revoked;
	// only run's goroutine uses it.
	stale []clientv3.LeaseID

	// mu guards the following fields.
	mu      sync.Mutex
	cli     *clientv3.Client
	view    *view // the current session's view of etcd; nil outside one
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New checks opts and returns a Cluster that has not contacted etcd yet.
func New(opts Options) (*Cluster, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrOptions, field, fmt.Sprintf(format, args...)))
	}
	if len(opts.Endpoints) == 0 {
		bad("Endpoints", "at least one etcd endpoint is required")
	}
	if opts.Node == "" {
		bad("Node", "a unique node name is required")
	}
	if opts.Lease < MinLease || opts.Lease > MaxLease {
		bad("Lease", "%v out of range %v..%v", opts.Lease, MinLease, MaxLease)
	}
	switch opts.Placement {
	case "":
		opts.Placement = PlacementSpread
	case PlacementSpread, PlacementPriority:
	default:
		bad("Placement", "%q is neither %q nor %q", opts.Placement, PlacementSpread, PlacementPriority)
	}
	switch opts.OnEtcdLoss {
	case "":
		opts.OnEtcdLoss = OnEtcdLossSilent
	case OnEtcdLossSilent, OnEtcdLossKeep:
	default:
		bad("OnEtcdLoss", "%q is neither %q nor %q", opts.OnEtcdLoss, OnEtcdLossSilent, OnEtcdLossKeep)
	}
	if opts.Weight < 0 {
		bad("Weight", "%v is negative", opts.Weight)
	}
	if opts.TableAddrs == nil {
		bad("TableAddrs", "required")
	}
	if opts.Logger == nil {
		bad("Logger", "required")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new cluster: %w", err)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.ReannounceAfter <= 0 {
		opts.ReannounceAfter = 3 * time.Second
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 2 * time.Second
	}
	c := &Cluster{
		opts:   opts,
		log:    opts.Logger.With("node", opts.Node),
		ttl:    int64((opts.Lease + time.Second - 1) / time.Second),
		keep:   opts.OnEtcdLoss == OnEtcdLossKeep,
		prefix: opts.Prefix,
		base:   time.Now(),
		wake:   make(chan struct{}, 1),
	}
	c.held.Store(&map[netip.Addr]struct{}{})
	return c, nil
}

// now is the monotonic time since c.base.
func (c *Cluster) now() int64 { return int64(time.Since(c.base)) }

// Open implements nic.Gate: whether the gateway may answer for its
// addresses now. It is true until the deadline derived from the last
// successful keepalive (its send time plus the lease TTL, minus a margin)
// and false from then on, and before the first lease; always true with
// OnEtcdLossKeep.
func (c *Cluster) Open() bool {
	return c.keep || c.now() < c.deadline.Load()
}

// Holds implements stack.Holder: whether this gateway holds ip.
func (c *Cluster) Holds(ip netip.Addr) bool {
	_, ok := (*c.held.Load())[ip]
	return ok
}

// Held returns the addresses this gateway holds. The map is shared: do not
// change it.
func (c *Cluster) Held() map[netip.Addr]struct{} { return *c.held.Load() }

// TableChanged tells the cluster that the table's addresses changed (a
// registry.Watch function): new addresses get a holder, a holder of a
// removed one gives it up. It does not block.
func (c *Cluster) TableChanged() { c.poke() }

func (c *Cluster) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Start connects to etcd and runs the gateway's membership until ctx is
// done or Close is called, in goroutines of its own: it returns at once.
// An unreachable etcd is logged and retried, never fatal; until a lease is
// granted the gateway holds nothing (and, without OnEtcdLossKeep, its fence
// is shut).
func (c *Cluster) Start(ctx context.Context, st Stack) error {
	if st == nil {
		return fmt.Errorf("start cluster: %w: Stack: required", ErrOptions)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            c.opts.Endpoints,
		TLS:                  c.opts.TLS,
		DialTimeout:          c.opts.DialTimeout,
		DialKeepAliveTime:    c.opts.Lease,
		DialKeepAliveTimeout: c.opts.Lease,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("start cluster: etcd client for %v: %w", c.opts.Endpoints, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		cli.Close()
		return fmt.Errorf("start cluster: %w", ErrClosed)
	case c.started:
		cli.Close()
		return errors.New("start cluster: started already")
	}
	c.started = true
	c.cli = cli
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run(ctx, st)
	}()
	return nil
}

// Close stops the membership and waits for its goroutines. The lease is
// revoked, so that the other gateways take the addresses over at once
// instead of when the lease would have ended; the fence shuts first. It is
// idempotent.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	cancel, cli := c.cancel, c.cli
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
	if cli != nil {
		cli.Close()
	}
}

// Holder returns the node holding ip in this gateway's view of etcd, and
// whether one does.
func (c *Cluster) Holder(ip netip.Addr) (string, bool) {
	c.mu.Lock()
	v := c.view
	c.mu.Unlock()
	if v == nil {
		return "", false
	}
	return v.holder(ip)
}

// NodeStatus is one gateway in `vipmux cluster status`.
type NodeStatus struct {
	Node
	// LeaseLeft is the time left on its lease, as etcd reports it.
	LeaseLeft time.Duration `json:"lease_left"`
	// Held is the number of addresses it holds.
	Held int `json:"held"`
}

// Status reads the live gateways from etcd, sorted by name.
func (c *Cluster) Status(ctx context.Context) ([]NodeStatus, error) {
	c.mu.Lock()
	cli := c.cli
	c.mu.Unlock()
	if cli == nil {
		return nil, fmt.Errorf("cluster status: %w", ErrNotStarted)
	}
	resp, err := cli.Get(ctx, c.prefix+"cluster/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster status: read etcd: %w", err)
	}
	v := newView(c.prefix)
	for _, kv := range resp.Kvs {
		v.put(kv)
	}
	var out []NodeStatus
	for _, n := range v.liveNodes() {
		s := NodeStatus{Node: n}
		for _, h := range v.holders {
			if h.node == n.Name {
				s.Held++
			}
		}
		if ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(n.Lease)); err == nil && ttl.TTL > 0 {
			s.LeaseLeft = time.Duration(ttl.TTL) * time.Second
		}
		out = append(out, s)
	}
	return out, nil
}

// Rebalance asks every gateway to give up the addresses whose preferred
// holder (by Options.Placement, among the live gateways) is another one,
// so that the preferred holders take them. Each moved address is dark
// between its release and its new holder's claim, and its connections are
// reset; addresses are otherwise sticky (a joining gateway takes none).
func (c *Cluster) Rebalance(ctx context.Context) error {
	c.mu.Lock()
	cli := c.cli
	c.mu.Unlock()
	if cli == nil {
		return fmt.Errorf("rebalance: %w", ErrNotStarted)
	}
	if _, err := cli.Put(ctx, c.prefix+"cluster/rebalance", time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("rebalance: write etcd: %w", err)
	}
	return nil
}

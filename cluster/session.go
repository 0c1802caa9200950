package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vipmux/vipmux/stack"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Session errors: why a lease was given up.
var (
	// errLeaseLost reports that etcd no longer knows the lease: it ended
	// (the gateway was cut off, or paused, longer than its TTL).
	errLeaseLost = errors.New("lease ended on the etcd side")
	// errFenced reports that no keepalive succeeded before the deadline:
	// the fence has shut, and the lease may end at any moment.
	errFenced = errors.New("no keepalive before the deadline: fenced")
)

// claimParallel bounds the holder transactions in flight at once.
const claimParallel = 16

// leaseDur is the lease TTL as a duration.
func (c *Cluster) leaseDur() time.Duration { return time.Duration(c.ttl) * time.Second }

// extend moves the deadline to sent + ttl - margin, sent being the
// monotonic time at which the successful grant or keepalive was sent: etcd
// started the TTL when it received the request, later than sent, so the
// lease cannot end on the etcd side before sent + ttl. The margin (a
// quarter of the TTL) covers the rate difference of the two clocks and
// the time a frame already handed to the link needs to leave.
func (c *Cluster) extend(sent int64, ttl int64) {
	d := time.Duration(ttl) * time.Second
	if dl := sent + int64(d-d/4); dl > c.deadline.Load() {
		c.deadline.Store(dl)
	}
}

// run keeps a session with etcd until ctx is done: a session that ends
// (etcd lost, lease ended) is followed by a new one with a new lease.
func (c *Cluster) run(ctx context.Context, st Stack) {
	backoff := 500 * time.Millisecond
	everJoined := false
	for {
		joined, err := c.session(ctx, st)
		if ctx.Err() != nil {
			return
		}
		switch {
		case joined:
			everJoined = true
			backoff = 500 * time.Millisecond
			c.log.Warn("left the cluster; joining again with a new lease", "err", err)
			continue
		case !everJoined:
			c.log.Error("cannot join the cluster at start-up (etcd unreachable?): holding no address, retrying", "etcd", c.opts.Endpoints, "retry", backoff, "err", err)
		default:
			c.log.Warn("cannot join the cluster: holding no address, retrying", "etcd", c.opts.Endpoints, "retry", backoff, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// session grants a lease, announces the node, and keeps the holders of the
// table's addresses until the lease is lost or ctx is done. It reports
// whether it joined (wrote its node key).
func (c *Cluster) session(ctx context.Context, st Stack) (bool, error) {
	cli := c.cli
	sent := c.now()
	gctx, gcancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	g, err := cli.Grant(gctx, c.ttl)
	gcancel()
	if err != nil {
		return false, fmt.Errorf("grant a %ds lease: %w", c.ttl, err)
	}
	lease := g.ID
	c.extend(sent, g.TTL)
	defer c.endSession(st, lease)
	c.revokeStale(ctx)

	v := newView(c.prefix)
	node := Node{Name: c.opts.Node, MAC: c.opts.MAC, Control: c.opts.Control, Priority: c.opts.Priority, Weight: c.opts.Weight}
	val, err := json.Marshal(node)
	if err != nil {
		return false, fmt.Errorf("node key: %w", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	// A node key of the same name under another live lease is a second
	// gateway with this name (or this one's previous life, whose lease
	// run revoked or etcd ended): the transaction refuses the first.
	nodeKey := v.nodesPrefix() + c.opts.Node
	tr, err := cli.Txn(pctx).
		If(clientv3.Compare(clientv3.LeaseValue(nodeKey), "=", clientv3.NoLease)).
		Then(clientv3.OpPut(nodeKey, string(val), clientv3.WithLease(lease))).
		Commit()
	pcancel()
	if err != nil {
		return false, fmt.Errorf("write node key %s: %w", nodeKey, err)
	}
	if !tr.Succeeded {
		return false, fmt.Errorf("node key %s is held by another live lease: is node %q running twice? (it goes when that lease ends)", nodeKey, c.opts.Node)
	}
	c.mu.Lock()
	c.view = v
	c.mu.Unlock()
	c.log.Info("joined the cluster", "lease", fmt.Sprintf("%x", int64(lease)), "ttl", g.TTL, "placement", c.opts.Placement)

	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	kaErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		kaErr <- c.keepAlive(sctx, lease)
	}()

	p := &placer{c: c, st: st, v: v, lease: lease, firstUnheld: map[netip.Addr]int64{}, backoff: map[netip.Addr]int64{}, released: map[netip.Addr]struct{}{}}
	for {
		rev, err := c.list(sctx, v)
		if err != nil {
			select {
			case err := <-kaErr:
				return true, err
			case <-sctx.Done():
				return true, nil
			case <-time.After(c.leaseDur() / 4):
				continue
			}
		}
		err = c.watch(sctx, v, rev, p, kaErr)
		if err != nil || sctx.Err() != nil {
			return true, err
		}
		// The watch ended (compacted, no leader, closed): list again.
	}
}

// list reads the cluster keys into v and returns the revision read.
func (c *Cluster) list(ctx context.Context, v *view) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	resp, err := c.cli.Get(lctx, c.prefix+"cluster/", clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list cluster keys: %w", err)
	}
	v.mu.Lock()
	clear(v.nodes)
	clear(v.holders)
	v.mu.Unlock()
	for _, kv := range resp.Kvs {
		v.put(kv)
	}
	return resp.Header.Revision, nil
}

// watch applies the changes after rev to v and places the addresses after
// each, until the watch ends (nil: list again) or the session does.
func (c *Cluster) watch(ctx context.Context, v *view, rev int64, p *placer, kaErr <-chan error) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.cli.Watch(wctx, c.prefix+"cluster/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	timer := time.NewTimer(0)
	defer timer.Stop()
	// apply applies one watch response to v; it reports whether the
	// response asks for a rebalance, and false in ok when the watch ended.
	apply := func(wr clientv3.WatchResponse, open bool) (rebalance, ok bool) {
		if !open || wr.Err() != nil || wr.Canceled {
			if open && wr.Err() != nil {
				c.log.Info("cluster watch ended; listing again", "err", wr.Err())
			}
			return false, false
		}
		for _, ev := range wr.Events {
			switch ev.Type {
			case clientv3.EventTypeDelete:
				v.del(string(ev.Kv.Key))
			default:
				if string(ev.Kv.Key) == v.rebalanceKey() {
					rebalance = true
				}
				v.put(ev.Kv)
			}
		}
		return rebalance, true
	}
	for {
		rebalance := false
		select {
		case <-ctx.Done():
			return nil
		case err := <-kaErr:
			return err
		case wr, open := <-wch:
			r, ok := apply(wr, open)
			if !ok {
				return nil
			}
			rebalance = r
			// Take in what else has arrived before placing: a takeover
			// or a batch of claims comes as many responses, and one
			// placement (one Rehold of the stack) serves them all.
		drain:
			for range 1024 {
				select {
				case wr, open := <-wch:
					r, ok := apply(wr, open)
					if !ok {
						return nil
					}
					rebalance = rebalance || r
				default:
					break drain
				}
			}
		case <-c.wake:
		case <-timer.C:
		}
		next := p.place(ctx, rebalance)
		timer.Stop()
		if next > 0 {
			timer.Reset(time.Duration(next - c.now()))
		}
	}
}

// keepAlive renews lease every quarter TTL, moving the deadline forward
// after each success, until ctx is done or the lease is lost: etcd no
// longer knows it, or (without OnEtcdLossKeep) the deadline passed with no
// success.
func (c *Cluster) keepAlive(ctx context.Context, lease clientv3.LeaseID) error {
	interval := c.leaseDur() / 4
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		sent := c.now()
		kctx, cancel := context.WithTimeout(ctx, interval)
		resp, err := c.cli.KeepAliveOnce(kctx, lease)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil && resp.TTL > 0:
			c.extend(sent, resp.TTL)
			if failing {
				c.log.Info("etcd reached again; lease still alive")
				failing = false
			}
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil:
			return errLeaseLost
		default:
			if !failing {
				c.log.Warn("lease keepalive failed", "etcd", c.opts.Endpoints, "err", err)
				failing = true
			}
			if !c.keep && c.now() >= c.deadline.Load() {
				c.log.Error("fenced: no keepalive within the lease; answering for no address", "lease", c.leaseDur())
				return fmt.Errorf("%w: %v", errFenced, err)
			}
		}
	}
}

// endSession gives up what the session held: the fence shuts (without
// OnEtcdLossKeep), the stack lets every held address go, and the lease is
// revoked, so that the other gateways take the addresses now. Nothing is
// taken back by force afterwards: the next session claims only addresses
// without a holder.
func (c *Cluster) endSession(st Stack, lease clientv3.LeaseID) {
	if !c.keep {
		c.deadline.Store(0)
	}
	c.publish(map[netip.Addr]struct{}{})
	if _, err := st.Rehold(); err != nil {
		c.log.Warn("release addresses", "err", err)
	}
	c.mu.Lock()
	c.view = nil
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.DialTimeout)
	defer cancel()
	if _, err := c.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		c.log.Info("revoke old lease; trying again once etcd answers", "lease", fmt.Sprintf("%x", int64(lease)), "err", err)
		c.stale = append(c.stale, lease)
	}
}

// revokeStale revokes the leases of earlier sessions that could not be
// revoked when they ended (etcd was unreachable): etcd may have kept them
// alive (it renews every lease when it restarts), and with them this
// gateway's old node key, which would keep it out, and its old holder
// keys, which would keep the addresses dark until the leases end.
func (c *Cluster) revokeStale(ctx context.Context) {
	var keep []clientv3.LeaseID
	for _, id := range c.stale {
		rctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
		_, err := c.cli.Revoke(rctx, id)
		cancel()
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			keep = append(keep, id)
		}
	}
	c.stale = keep
}

// publish makes held the set that Holds answers from.
func (c *Cluster) publish(held map[netip.Addr]struct{}) { c.held.Store(&held) }

// placer decides, within one session, which addresses this gateway claims
// and gives up, and makes the stack follow.
type placer struct {
	c     *Cluster
	st    Stack
	v     *view
	lease clientv3.LeaseID

	// firstUnheld is when an address was first seen without a holder;
	// backoff is until when it is not claimed (a probe found the previous
	// holder still answering). Monotonic times.
	firstUnheld map[netip.Addr]int64
	backoff     map[netip.Addr]int64
	// released are addresses whose holder key this session deleted and
	// the view may still show (until the watch brings the deletion).
	released map[netip.Addr]struct{}
	// reannounce are the taken-over addresses to announce again, and
	// when.
	reannounce []pendingAnnounce
}

type pendingAnnounce struct {
	at    int64
	addrs []netip.Addr
}

// place brings holding in line with the view and the table, and returns
// the monotonic time at which it wants to run again (0: no need).
func (p *placer) place(ctx context.Context, rebalance bool) int64 {
	c := p.c
	now := c.now()
	var next int64
	soon := func(t int64) {
		if next == 0 || t < next {
			next = t
		}
	}
	// Announce again what was taken over a few seconds ago.
	p.reannounce = slices.DeleteFunc(p.reannounce, func(r pendingAnnounce) bool {
		if r.at <= now {
			p.st.Reannounce(r.addrs)
			return true
		}
		soon(r.at)
		return false
	})

	table := c.opts.TableAddrs()
	nodes := p.v.liveNodes()
	held := p.v.heldBy(int64(p.lease))
	for ip := range p.released {
		if _, ok := held[ip]; ok {
			delete(held, ip)
		} else {
			delete(p.released, ip)
		}
	}
	if rebalance {
		p.giveUp(ctx, held, func(ip netip.Addr) bool {
			return position(ip, nodes, c.opts.Placement, c.opts.Node) > 0
		}, "rebalance")
	}
	// Addresses that left the table: give their holder keys up.
	p.giveUp(ctx, held, func(ip netip.Addr) bool {
		_, ok := table[ip]
		return !ok
	}, "deregistered")
	if !maps.Equal(held, c.Held()) {
		p.rehold(ctx, held)
	}

	// Claim the table's addresses without a holder: the preferred live
	// node at once, the next one after a lease if it has not, and so on.
	var claims []netip.Addr
	meLive := slices.ContainsFunc(nodes, func(n Node) bool { return n.Name == c.opts.Node })
	unheld := p.v.unheld(table)
	// An address that got a holder (or left the table) starts its wait
	// afresh the next time it has none.
	unheldSet := make(map[netip.Addr]struct{}, len(unheld))
	for _, ip := range unheld {
		unheldSet[ip] = struct{}{}
	}
	for ip := range p.firstUnheld {
		if _, ok := unheldSet[ip]; !ok {
			delete(p.firstUnheld, ip)
		}
	}
	for ip, until := range p.backoff {
		if until <= now {
			delete(p.backoff, ip)
		}
	}
	for _, ip := range unheld {
		if until, ok := p.backoff[ip]; ok {
			soon(until)
			continue
		}
		first, ok := p.firstUnheld[ip]
		if !ok {
			first = now
			p.firstUnheld[ip] = now
		}
		if !meLive {
			continue
		}
		due := first + int64(position(ip, nodes, c.opts.Placement, c.opts.Node))*int64(c.leaseDur())
		if due <= now {
			claims = append(claims, ip)
		} else {
			soon(due)
		}
	}
	p.claim(ctx, claims)
	return next
}

// giveUp releases the addresses of held that drop accepts: the stack
// stops answering for them first, then their holder keys go, so that
// their next holder cannot answer while this gateway still does.
func (p *placer) giveUp(ctx context.Context, held map[netip.Addr]struct{}, drop func(netip.Addr) bool, why string) {
	var gone []netip.Addr
	for ip := range held {
		if drop(ip) {
			gone = append(gone, ip)
			delete(held, ip)
		}
	}
	if len(gone) == 0 {
		return
	}
	p.rehold(ctx, held)
	for _, ip := range gone {
		p.release(ctx, ip)
	}
	p.c.log.Info("gave addresses up", "why", why, "count", len(gone))
}

// release deletes ip's holder key if it is still this session's.
func (p *placer) release(ctx context.Context, ip netip.Addr) {
	p.released[ip] = struct{}{}
	key := p.v.holdersPrefix() + ip.String()
	rctx, cancel := context.WithTimeout(ctx, p.c.opts.DialTimeout)
	defer cancel()
	_, err := p.c.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", p.lease)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		p.c.log.Warn("give up address", "ip", ip, "err", err)
	}
}

// rehold publishes held and makes the stack follow. A probe answered by
// another host (the previous holder still answers) gives that address up
// for a lease's time; the rest are held.
func (p *placer) rehold(ctx context.Context, held map[netip.Addr]struct{}) {
	c := p.c
	before := c.Held()
	for {
		c.publish(held)
		added, err := p.st.Rehold()
		var conflict *stack.ConflictError
		if errors.As(err, &conflict) {
			if _, ok := held[conflict.Addr]; ok {
				c.log.Warn("another host still answers for a taken address; backing off", "ip", conflict.Addr, "mac", conflict.MAC.String(), "for", c.leaseDur())
				held = maps.Clone(held)
				delete(held, conflict.Addr)
				p.backoff[conflict.Addr] = c.now() + int64(c.leaseDur())
				p.release(ctx, conflict.Addr)
				continue
			}
		}
		if err != nil {
			c.log.Error("stack did not follow the held addresses", "err", err)
			return
		}
		var taken []netip.Addr
		for _, a := range added {
			if _, was := before[a]; !was {
				taken = append(taken, a)
			}
		}
		if len(taken) > 0 {
			c.log.Info("holding addresses", "count", len(taken), "first", taken[0], "held", len(held))
			p.reannounce = append(p.reannounce, pendingAnnounce{at: c.now() + int64(c.opts.ReannounceAfter), addrs: taken})
		}
		return
	}
}

// claim writes a holder key for each address, each only if the key does
// not exist (a transaction on its create revision), attached to the
// session's lease. The watch brings the keys won into the view.
func (p *placer) claim(ctx context.Context, ips []netip.Addr) {
	if len(ips) == 0 {
		return
	}
	sem := make(chan struct{}, claimParallel)
	var wg sync.WaitGroup
	for _, ip := range ips {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := claimKey(ctx, p.c.cli, p.v.holdersPrefix()+ip.String(), p.c.opts.Node, p.lease, p.c.opts.DialTimeout); err != nil {
				p.c.log.Warn("claim address", "ip", ip, "err", err)
			}
		}()
	}
	wg.Wait()
}

// claimKey creates key = node attached to lease if key does not exist, and
// reports whether it did.
func claimKey(ctx context.Context, cli *clientv3.Client, key, node string, lease clientv3.LeaseID, timeout time.Duration) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr, err := cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, node, clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", key, err)
	}
	return tr.Succeeded, nil
}

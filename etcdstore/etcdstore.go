// Package etcdstore keeps the registry's table in etcd, so that several
// gateways share one table ([cluster] etcd). It owns the keys under
// Prefix + "table/"; other packages (the cluster's holders) keep theirs
// elsewhere under Prefix.
//
// Each binding is one key, its value the binding as JSON without the
// members' lease deadlines: Prefix + "table/b/" + IP + "/" + port. A
// member registered with a TTL also has a lease key, Prefix + "table/l/" +
// IP + "/" + port + "/" + name, attached to an etcd lease of that TTL
// (rounded up to whole seconds; etcd may raise it to its minimum): a
// renewal through any gateway keeps the etcd lease alive, and when the
// lease ends etcd deletes the key, every gateway sees the member's lease
// expired, and the first one to run its expiry marks the member down (or
// removes a mode-1 member) with a compare-and-swap like any write.
//
// A gateway lists the keys once (Open), then watches them from the listed
// revision into the registry's snapshot (Run, through
// registry.ApplyRemote): the data path reads the snapshot and never waits
// on etcd. A watch whose revision etcd has compacted lists again. Writes
// are compare-and-swap transactions on the bindings they touch (Commit,
// through registry.Remote).
//
//	st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: eps, Logger: log})
//	reg, err := registry.New(registry.Options{Store: st})
//	go st.Run(ctx, reg) // until ctx is done
//	defer st.Close()
package etcdstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vipmux/vipmux/registry"
)

// DefaultPrefix is Options.Prefix's default.
const DefaultPrefix = "/vipmux/"

// Options configures a Store.
type Options struct {
	// Endpoints are the etcd endpoints ([cluster] etcd); ignored with
	// Client.
	Endpoints []string
	// TLS, if not nil, is used to reach etcd ([cluster] etcd_ca,
	// etcd_cert, etcd_key).
	TLS *tls.Config
	// Prefix is where the vipmux keys live; "" means DefaultPrefix. It
	// must end with "/".
	Prefix string
	// Timeout bounds one etcd request (a list, a transaction); zero
	// means 5s.
	Timeout time.Duration
	// Client, if not nil, is used instead of a client that Open dials;
	// Close leaves it open.
	Client *clientv3.Client
	// Logger receives the store's log lines; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Table is what Run feeds: the registry.
type Table interface {
	// ApplyRemote applies a watched change at revision rev; see
	// registry.Registry.ApplyRemote.
	ApplyRemote(rev int64, set []*registry.Binding, del []registry.Key)
}

// Store is a registry.Remote on etcd. Its methods are safe for
// concurrent use.
type Store struct {
	cli       *clientv3.Client
	ownClient bool
	prefix    string // Prefix + "table/"
	timeout   time.Duration
	log       *slog.Logger
	now       func() time.Time

	// wmu guards wctx, the context of the running watch (nil between
	// watches): RequestProgress addresses the watch stream through it.
	wmu  sync.Mutex
	wctx context.Context

	// mu guards the following fields: the view, as of rev.
	mu  sync.Mutex
	rev int64
	// applied is the newest revision whose changes of the table t has
	// applied: from events and lists only. rev may run ahead of it on a
	// progress notification, which etcd before 3.4.24 and 3.5.8 can send
	// ahead of events still on their way (etcd issue 15220): a
	// successful Commit waits for applied, so that its answer never
	// rests on one.
	applied int64
	// advanced is closed, and replaced, when applied grows.
	advanced chan struct{}
	// raw are the bindings as etcd holds them.
	raw map[registry.Key]*registry.Binding
	// leases are the lease keys present, with their etcd lease.
	leases map[memberRef]clientv3.LeaseID
	// gone is, per binding and member, when a leased member's lease key
	// was first seen missing: its lease deadline in the registry's table.
	gone map[registry.Key]map[string]time.Time
	// shown are the bindings as last handed to the registry.
	shown map[registry.Key]*registry.Binding
}

var _ registry.Remote = (*Store)(nil)

// memberRef names one member of one binding.
type memberRef struct {
	key  registry.Key
	name string
}

// Open connects to etcd and lists the table. While etcd cannot be reached
// it logs why and tries again, until ctx is done.
func Open(ctx context.Context, opts Options) (*Store, error) {
	s := &Store{
		cli:     opts.Client,
		prefix:  opts.Prefix,
		timeout: opts.Timeout,
		log:     opts.Logger,
		now:     opts.Now,
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if !strings.HasSuffix(s.prefix, "/") {
		return nil, fmt.Errorf("etcd prefix %q: must end with /", s.prefix)
	}
	s.prefix += "table/"
	if s.timeout <= 0 {
		s.timeout = 5 * time.Second
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.cli == nil {
		if len(opts.Endpoints) == 0 {
			return nil, errors.New("cluster.etcd: no endpoints")
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   opts.Endpoints,
			TLS:         opts.TLS,
			DialTimeout: s.timeout,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return nil, fmt.Errorf("cluster.etcd %v: %w", opts.Endpoints, err)
		}
		s.cli, s.ownClient = cli, true
	}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := s.relist(ctx)
		if err == nil {
			break
		}
		s.log.Error("etcd unreachable: the gateway waits for the shared table before it starts; retrying", "endpoints", opts.Endpoints, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			s.Close()
			return nil, fmt.Errorf("list the shared table in etcd: %w (gave up: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.raw {
		s.shown[k] = s.deriveLocked(k)
	}
	return s, nil
}

// Close closes the etcd client, unless Options.Client gave it.
func (s *Store) Close() error {
	if s.ownClient {
		return s.cli.Close()
	}
	return nil
}

// Load implements registry.Store: the table as Open listed it.
func (s *Store) Load() (*registry.Table, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bs := make([]*registry.Binding, 0, len(s.shown))
	for _, b := range s.shown {
		bs = append(bs, b)
	}
	data, err := json.Marshal(struct {
		Version  int                 `json:"version"`
		Bindings []*registry.Binding `json:"bindings"`
	}{1, bs})
	if err != nil {
		return nil, fmt.Errorf("encode the shared table: %w", err)
	}
	return registry.DecodeTable(data)
}

// Save implements registry.Store; the registry never calls it on a
// registry.Remote.
func (s *Store) Save(*registry.Table) error {
	return errors.New("etcdstore: Save is not used: the registry commits through Commit")
}

// Revision returns the revision of the store's view.
func (s *Store) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Run feeds t with the table and every change of it, in revision order,
// until ctx is done: first the whole table as Open listed it, then what
// the watch reports. When the watch's revision has been compacted, or
// the watch breaks, it lists again and hands t the difference. It returns
// ctx's error.
func (s *Store) Run(ctx context.Context, t Table) error {
	// t holds the table that Load returned, but for the leased members'
	// deadlines (a restored table's run from the restart): hand it those
	// bindings as the view has them, and the view's revision.
	s.mu.Lock()
	var set []*registry.Binding
	for _, b := range s.shown {
		if leased(b) {
			set = append(set, b)
		}
	}
	rev := s.rev
	s.mu.Unlock()
	t.ApplyRemote(rev, set, nil)
	s.setApplied(rev)

	wait := 100 * time.Millisecond
	sleep := func() {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
	for ctx.Err() == nil {
		relist, err := s.watch(ctx, t)
		if ctx.Err() != nil {
			break
		}
		if relist {
			s.log.Warn("the etcd watch fell behind a compaction: listing the shared table again", "revision", s.Revision())
		} else {
			s.log.Warn("the etcd watch ended: listing the shared table and watching again", "revision", s.Revision(), "err", err)
			sleep()
		}
		// List again in both cases, before any new watch: the watch may
		// have missed what happened while it was down, a compacted
		// revision cannot be watched from at all, and the view's revision
		// may be a progress notification's, which a new watch must not
		// start from.
		for ctx.Err() == nil {
			err := s.relistApply(ctx, t)
			if err == nil {
				break
			}
			s.log.Error("list the shared table in etcd", "err", err)
			sleep()
		}
		wait = 100 * time.Millisecond
	}
	return ctx.Err()
}

// watch watches the table from the view's revision and applies what it
// sees until the watch ends; relist reports a compacted revision.
func (s *Store) watch(ctx context.Context, t Table) (relist bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(s.Revision()+1))
	s.wmu.Lock()
	s.wctx = wctx
	s.wmu.Unlock()
	defer func() {
		s.wmu.Lock()
		s.wctx = nil
		s.wmu.Unlock()
	}()
	for resp := range wch {
		if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			return true, nil
		}
		if err := resp.Err(); err != nil {
			return false, err
		}
		switch {
		case len(resp.Events) > 0:
			s.applyEvents(resp.Events, t)
		case resp.IsProgressNotify():
			// Every change of the table up to this revision has been
			// delivered: the view is at it, although the revisions
			// since were other keys' (the cluster's holders).
			s.mu.Lock()
			rev := max(s.rev, resp.Header.Revision)
			s.rev = rev
			s.mu.Unlock()
			t.ApplyRemote(rev, nil, nil)
		}
	}
	return false, errors.New("watch channel closed")
}

// applyEvents applies one watch response's events to the view and hands
// the changed bindings to t.
func (s *Store) applyEvents(evs []*clientv3.Event, t Table) {
	s.mu.Lock()
	dirty := map[registry.Key]bool{}
	rev := s.rev
	for _, ev := range evs {
		rev = max(rev, ev.Kv.ModRevision)
		k, name, isLease, err := s.parseKey(string(ev.Kv.Key))
		if err != nil {
			s.log.Error("ignoring a key in the shared table", "key", string(ev.Kv.Key), "err", err)
			continue
		}
		dirty[k] = true
		ref := memberRef{k, name}
		switch {
		case isLease && ev.Type == mvccpb.PUT:
			s.leases[ref] = clientv3.LeaseID(ev.Kv.Lease)
		case isLease:
			delete(s.leases, ref)
			if s.gone[k] == nil {
				s.gone[k] = map[string]time.Time{}
			}
			s.gone[k][name] = s.now()
		case ev.Type == mvccpb.PUT:
			b, err := decodeBinding(k, ev.Kv.Value)
			if err != nil {
				s.log.Error("ignoring a binding in the shared table", "key", string(ev.Kv.Key), "err", err)
				delete(s.raw, k)
				continue
			}
			s.raw[k] = b
		default:
			delete(s.raw, k)
		}
	}
	s.rev = rev
	set, del := s.refreshLocked(dirty)
	s.mu.Unlock()
	t.ApplyRemote(rev, set, del)
	s.setApplied(rev)
}

// setApplied records that t has applied the table's changes up to rev.
func (s *Store) setApplied(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > s.applied {
		s.applied = rev
		if s.advanced != nil {
			close(s.advanced)
			s.advanced = nil
		}
	}
}

// waitApplied waits until t has applied the changes up to rev, or ctx is
// done.
func (s *Store) waitApplied(ctx context.Context, rev int64) error {
	for {
		s.mu.Lock()
		if s.applied >= rev {
			s.mu.Unlock()
			return nil
		}
		if s.advanced == nil {
			s.advanced = make(chan struct{})
		}
		ch := s.advanced
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// relistApply lists the table again and hands t what changed.
func (s *Store) relistApply(ctx context.Context, t Table) error {
	if err := s.relist(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	dirty := map[registry.Key]bool{}
	for k := range s.raw {
		dirty[k] = true
	}
	for k := range s.shown {
		dirty[k] = true
	}
	set, del := s.refreshLocked(dirty)
	rev := s.rev
	s.mu.Unlock()
	t.ApplyRemote(rev, set, del)
	s.setApplied(rev)
	return nil
}

// refreshLocked derives the bindings at keys and returns those that differ
// from what the registry was shown; s.mu is held.
func (s *Store) refreshLocked(keys map[registry.Key]bool) (set []*registry.Binding, del []registry.Key) {
	for k := range keys {
		d := s.deriveLocked(k)
		old, had := s.shown[k]
		switch {
		case d == nil && had:
			delete(s.shown, k)
			del = append(del, k)
		case d != nil && (!had || !reflect.DeepEqual(d, old)):
			s.shown[k] = d
			set = append(set, d)
		}
	}
	return set, del
}

// relist reads the whole table from etcd into the view.
func (s *Store) relist(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	raw := map[registry.Key]*registry.Binding{}
	leases := map[memberRef]clientv3.LeaseID{}
	for _, kv := range resp.Kvs {
		k, name, isLease, err := s.parseKey(string(kv.Key))
		if err != nil {
			s.log.Error("ignoring a key in the shared table", "key", string(kv.Key), "err", err)
			continue
		}
		if isLease {
			leases[memberRef{k, name}] = clientv3.LeaseID(kv.Lease)
			continue
		}
		b, err := decodeBinding(k, kv.Value)
		if err != nil {
			s.log.Error("ignoring a binding in the shared table", "key", string(kv.Key), "err", err)
			continue
		}
		raw[k] = b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw, s.leases, s.rev = raw, leases, resp.Header.Revision
	if s.gone == nil {
		s.gone = map[registry.Key]map[string]time.Time{}
		s.shown = map[registry.Key]*registry.Binding{}
	}
	return nil
}

// deriveLocked returns binding k as the registry's table shows it, nil if
// there is none: the binding as stored, with the lease deadline of each
// leased member whose lease key is gone set to when it went (it expires
// at the registry's next expiry run); s.mu is held.
func (s *Store) deriveLocked(k registry.Key) *registry.Binding {
	raw, ok := s.raw[k]
	gone := s.gone[k]
	delete(s.gone, k) // kept below for the members that still need it
	if !ok {
		return nil
	}
	b := &registry.Binding{Key: k, Members: append([]registry.Member(nil), raw.Members...)}
	for i := range b.Members {
		m := &b.Members[i]
		m.Expires = time.Time{}
		if m.TTL == 0 || m.DownCause == registry.DownLease {
			continue
		}
		if _, ok := s.leases[memberRef{k, m.Name}]; ok {
			continue
		}
		at, ok := gone[m.Name]
		if !ok {
			at = s.now()
		}
		if s.gone[k] == nil {
			s.gone[k] = map[string]time.Time{}
		}
		s.gone[k][m.Name] = at
		m.Expires = at
	}
	return b
}

// Commit implements registry.Remote: one transaction that writes the
// edited bindings (and their members' lease keys) if no edited binding
// changed after rev. A renewal of a member whose etcd lease lives keeps
// that lease alive and writes nothing.
func (s *Store) Commit(rev int64, edits []registry.Edit) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	var (
		cmps    []clientv3.Cmp
		ops     []clientv3.Op
		granted []clientv3.LeaseID
	)
	revoke := func() {
		for _, id := range granted {
			rctx, rcancel := context.WithTimeout(context.Background(), s.timeout)
			_, _ = s.cli.Revoke(rctx, id)
			rcancel()
		}
	}
	for _, e := range edits {
		bk := s.bindingKey(e.Key)
		if e.Old != nil {
			cmps = append(cmps,
				clientv3.Compare(clientv3.ModRevision(bk), "<", rev+1),
				clientv3.Compare(clientv3.Version(bk), ">", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(bk), "=", 0))
		}
		if leased(e.Old) || leased(e.New) {
			// An expiry and a renewal of one member race on its lease
			// key: the later must see the earlier.
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.leasePrefix(e.Key)), "<", rev+1).WithPrefix())
		}
		if e.New == nil {
			ops = append(ops, clientv3.OpDelete(bk), clientv3.OpDelete(s.leasePrefix(e.Key), clientv3.WithPrefix()))
			continue
		}
		oldVal, err := encodeBinding(e.Old)
		if err != nil {
			return 0, err
		}
		newVal, err := encodeBinding(e.New)
		if err != nil {
			return 0, err
		}
		if e.Old == nil || oldVal != newVal {
			ops = append(ops, clientv3.OpPut(bk, newVal))
		}
		for _, m := range e.New.Members {
			if m.TTL == 0 {
				continue
			}
			var om *registry.Member
			if e.Old != nil {
				if x, ok := e.Old.Member(m.Name); ok {
					om = &x
				}
			}
			if om != nil && om.TTL == m.TTL && (m.Expires.IsZero() || m.Expires.Equal(om.Expires)) {
				continue // not (re)registered nor renewed
			}
			ref := memberRef{e.Key, m.Name}
			s.mu.Lock()
			id, live := s.leases[ref]
			s.mu.Unlock()
			if live && om != nil && om.TTL == m.TTL {
				if _, err := s.cli.KeepAliveOnce(ctx, id); err == nil {
					continue
				} else if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
					revoke()
					return 0, fmt.Errorf("renew the etcd lease of %s on %s: %w", m.Name, e.Key, err)
				}
			}
			lease, err := s.cli.Grant(ctx, ttlSeconds(m.TTL))
			if err != nil {
				revoke()
				return 0, fmt.Errorf("grant an etcd lease for %s on %s: %w", m.Name, e.Key, err)
			}
			granted = append(granted, lease.ID)
			ops = append(ops, clientv3.OpPut(s.leaseKey(e.Key, m.Name), "", clientv3.WithLease(lease.ID)))
		}
		if e.Old != nil {
			for _, om := range e.Old.Members {
				if m, ok := e.New.Member(om.Name); om.TTL > 0 && (!ok || m.TTL == 0) {
					ops = append(ops, clientv3.OpDelete(s.leaseKey(e.Key, om.Name)))
				}
			}
		}
	}
	if len(ops) == 0 {
		return rev, nil
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		revoke()
		return 0, fmt.Errorf("etcd transaction on %d bindings: %w", len(edits), err)
	}
	if !resp.Succeeded {
		revoke()
		s.catchUp(ctx, resp.Header.Revision)
		return resp.Header.Revision, registry.ErrStale
	}
	// Read your writes: the change's own event, not a progress
	// notification, is what must have reached the registry.
	if err := s.waitApplied(ctx, resp.Header.Revision); err != nil {
		return 0, fmt.Errorf("committed at revision %d, but this gateway's watch has not delivered it: %w", resp.Header.Revision, err)
	}
	return resp.Header.Revision, nil
}

// catchUp asks the watch for progress notifications until the view
// reaches rev, or ctx is done: the revisions after a change of the table
// may be other keys', which the watch does not report, and the registry
// waits for its view to reach rev before it retries.
func (s *Store) catchUp(ctx context.Context, rev int64) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.Revision() < rev {
		s.wmu.Lock()
		wctx := s.wctx
		s.wmu.Unlock()
		if wctx != nil {
			_ = s.cli.RequestProgress(wctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// leased reports whether b has a member on a lease.
func leased(b *registry.Binding) bool {
	if b == nil {
		return false
	}
	for _, m := range b.Members {
		if m.TTL > 0 {
			return true
		}
	}
	return false
}

// ttlSeconds is d in whole seconds, rounded up: etcd leases count seconds.
func ttlSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// encodeBinding is b's value in etcd: its JSON without the members' lease
// deadlines, which etcd's leases stand for; "" for nil.
func encodeBinding(b *registry.Binding) (string, error) {
	if b == nil {
		return "", nil
	}
	c := registry.Binding{Key: b.Key, Members: append([]registry.Member(nil), b.Members...)}
	for i := range c.Members {
		c.Members[i].Expires = time.Time{}
	}
	data, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode binding %s: %w", b.Key, err)
	}
	return string(data), nil
}

// decodeBinding decodes the value of binding key k.
func decodeBinding(k registry.Key, v []byte) (*registry.Binding, error) {
	var b registry.Binding
	if err := json.Unmarshal(v, &b); err != nil {
		return nil, fmt.Errorf("decode binding: %w", err)
	}
	if b.Key != k {
		return nil, fmt.Errorf("binding %s stored under the key of %s", b.Key, k)
	}
	return &b, nil
}

func (s *Store) bindingKey(k registry.Key) string {
	return s.prefix + "b/" + k.IP.String() + "/" + strconv.Itoa(int(k.Port))
}

func (s *Store) leasePrefix(k registry.Key) string {
	return s.prefix + "l/" + k.IP.String() + "/" + strconv.Itoa(int(k.Port)) + "/"
}

func (s *Store) leaseKey(k registry.Key, name string) string { return s.leasePrefix(k) + name }

// parseKey parses a key under the table prefix: a binding key, or a lease
// key (isLease, with the member's name).
func (s *Store) parseKey(key string) (k registry.Key, name string, isLease bool, err error) {
	rest, ok := strings.CutPrefix(key, s.prefix)
	if !ok {
		return k, "", false, errors.New("outside the table")
	}
	kind, rest, _ := strings.Cut(rest, "/")
	parts := strings.Split(rest, "/")
	switch {
	case kind == "b" && len(parts) == 2:
	case kind == "l" && len(parts) == 3 && parts[2] != "":
		name, isLease = parts[2], true
	default:
		return k, "", false, errors.New("not a binding or lease key")
	}
	ip, err := netip.ParseAddr(parts[0])
	if err != nil {
		return k, "", false, fmt.Errorf("bad address: %w", err)
	}
	port, err := strconv.ParseUint(parts[1], 10, 16)
	if err != nil {
		return k, "", false, fmt.Errorf("bad port: %w", err)
	}
	return registry.Key{IP: ip, Port: uint16(port)}, name, isLease, nil
}

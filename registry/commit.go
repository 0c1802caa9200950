package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// errNoChange tells update that fn succeeded without changing anything.
var errNoChange = errors.New("no change")

// update applies fn to a copy of the newest table and, if fn succeeds,
// makes the copy durable and visible: prepare, save, publish, watchers,
// commit. It returns once the change is durable and published, or failed.
//
// Saves are group-committed: changes made while a save is running wait
// together and the next save makes them all durable at once, so N
// concurrent writers cost one fsync, not N. A change is applied to the
// newest table (r.pending), which runs ahead of the published one
// (r.snap) by at most two batches, the one being saved and the one
// waiting; Table only ever shows durable tables, and so does Lookup except
// for a change of states only, which it routes by while it is being saved
// (routesEarly).
//
// update is for manual changes (register, switch, deregister, renew): one
// that cannot be made durable fails, and is undone. updateAuto is for
// automatic ones.
func (r *Registry) update(fn func(*Table) error) error {
	if rs, ok := r.opts.Store.(Remote); ok {
		return r.updateRemote(rs, fn) // remote.go
	}
	return r.commit(fn, nil)
}

// updateAuto is update for an automatic change (a health report, a lease
// expiry, the end of a drain): routing must follow health even when the
// disk fails. If its save fails, the change stands in memory all the same
// (see save): it is published, its events recorded, and its persistence
// retried (RunExpiry) until a save succeeds. It returns fn's error, never
// the save's, which save logs and counts (SaveFailures).
func (r *Registry) updateAuto(fn func(*Table) error) error {
	if rs, ok := r.opts.Store.(Remote); ok {
		// A shared table (remote.go) has no local save to fail: the
		// change stands once etcd has it, like any other.
		return r.updateRemote(rs, fn)
	}
	return r.commit(fn, &autoChange{fn: fn})
}

// autoChange is an automatic change in a batch: if the batch's save
// fails, save applies fn again to the last durable table, and err is its
// result.
type autoChange struct {
	fn  func(*Table) error
	err error
}

// commit is update; auto is nil for a manual change.
func (r *Registry) commit(fn func(*Table) error, auto *autoChange) error {
	r.mu.Lock()
	next, evs, err := r.prepareLocked(fn)
	if err != nil {
		if errors.Is(err, errNoChange) {
			return nil
		}
		return err
	}
	r.pending = next
	if r.opts.Store == nil {
		prev := r.snap.Load()
		r.publishLocked(prev, next, evs)
		r.mu.Unlock()
		return nil
	}
	if routesEarly(r.route.Load(), next) {
		// Only states changed (a switch, a failover): new connections
		// follow it now, while it is being saved, so that a switch takes
		// effect after the request rather than after the disk. The answer,
		// Table, the watchers (events, metrics, pruning) and the release of
		// anything wait until it is durable; if the save fails, route goes
		// back with pending and nothing ever reports the change. What can
		// be seen of a change that failed: the connections that arrived
		// during the save went to a member that is still in its binding.
		r.route.Store(next)
	}
	b := r.open
	if b == nil {
		b = &batch{done: make(chan struct{}), lead: make(chan struct{}, 1)}
		r.open = b
	}
	b.events = append(b.events, evs...)
	if auto != nil {
		b.autos = append(b.autos, auto)
	}
	lead := !r.saving
	if lead {
		r.saving = true
		r.open, b.table = nil, r.pending
	}
	r.mu.Unlock()
	if !lead {
		select {
		case <-b.done:
			return r.result(b, auto)
		case <-b.lead: // the previous save handed over: save this batch
		}
	}
	r.save(b)
	return r.result(b, auto)
}

// result is what commit returns for a change of batch b, which is done.
func (r *Registry) result(b *batch, auto *autoChange) error {
	if auto == nil || b.err == nil {
		return b.err
	}
	if errors.Is(auto.err, errNoChange) {
		return nil
	}
	return auto.err
}

// batch is a group of changes that one save makes durable.
type batch struct {
	// table is the table to save: the newest one when the batch closed.
	table *Table
	// done is closed when the batch is published or has failed (err).
	done chan struct{}
	// lead receives once, to make one of the batch's writers its saver.
	lead chan struct{}
	// events are the automatic changes that the batch's changes made:
	// recorded when it is published, never if it fails.
	events []Event
	// autos are the batch's automatic changes, in order: they stand even
	// if the save fails.
	autos []*autoChange
	err   error
}

// save makes b durable, then publishes it, or undoes every change not yet
// durable if the save fails, except the automatic ones: those are applied
// again to the last durable table and published in memory, and their
// persistence is retried (retrySave). It hands the next open batch to one
// of its writers.
func (r *Registry) save(b *batch) {
	start := time.Now() // not r.now: a duration, on the monotonic clock
	err := r.opts.Store.Save(b.table)
	if r.opts.ObserveSave != nil {
		r.opts.ObserveSave(time.Since(start))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(b.done)
	prev := r.snap.Load()
	if err != nil {
		r.saveFailures.Add(1)
		b.err = fmt.Errorf("save table: %w", err)
		// Later changes were built on this one: they fail with it.
		autos := b.autos
		if r.applier != nil {
			r.applier.Commit(r.pending, prev) // release what Prepare took
		}
		r.pending = prev
		r.route.Store(prev)
		o := r.open
		if o != nil {
			o.err = fmt.Errorf("save table (with an earlier change): %w", err)
			autos = append(autos, o.autos...)
			r.open = nil
			defer close(o.done)
		}
		r.saving = false
		// Routing follows health even when the disk fails: the automatic
		// changes stand, in memory.
		var evs []Event
		for _, a := range autos {
			next, e, err := r.buildLocked(a.fn)
			a.err = err
			if err == nil {
				r.pending = next
				evs = append(evs, e...)
			}
		}
		r.log.Error("save table: the state file misses the latest changes; manual changes failed, automatic ones stand in memory and are saved again later",
			"err", err, "automatic_changes", len(autos), "failures", r.saveFailures.Load())
		if r.pending != prev {
			r.unsaved = true
			r.publishLocked(prev, r.pending, evs)
		}
		return
	}
	r.unsaved = false
	r.publishLocked(prev, b.table, b.events)
	if o := r.open; o != nil {
		r.open, o.table = nil, r.pending
		o.lead <- struct{}{}
		return
	}
	r.saving = false
}

// SaveFailures returns how many saves of the table have failed since the
// registry started (a metric: the state file misses changes until a save
// succeeds).
func (r *Registry) SaveFailures() uint64 { return r.saveFailures.Load() }

// Unsaved reports whether the table holds automatic changes that a failed
// save left out of the state file (retried by RunExpiry).
func (r *Registry) Unsaved() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unsaved
}

// retrySave saves the table again if a failed save left automatic changes
// out of the state file and no save is running; it returns the save's
// error. RunExpiry calls it.
func (r *Registry) retrySave() error {
	r.mu.Lock()
	if !r.unsaved || r.saving || r.opts.Store == nil {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	// A change of nothing: the save takes the whole newest table. As a
	// manual change, its failure is returned rather than retried inside.
	return r.update(func(*Table) error { return nil })
}

// publishLocked makes next (durable) the published table, records evs (the
// automatic changes it holds) and releases what prev held that neither
// next nor a pending change holds; r.mu is held.
func (r *Registry) publishLocked(prev, next *Table, evs []Event) {
	r.snap.Store(next)
	r.recordLocked(evs)
	// A table routed early that is newer than next (a switch made while
	// next was being saved) holds next's changes: it stays.
	if cur := r.route.Load(); cur.changes <= next.changes {
		r.route.Store(next)
	}
	for _, w := range r.watchers {
		w(prev, next)
	}
	if r.applier != nil {
		r.applier.Commit(prev, Union(next, r.pending))
	}
}

// prepareLocked builds a change (fn applied to a copy of the newest table,
// and repairLocked) and has the applier acquire what it adds. r.mu is held
// on entry; it is held on a successful return and released on an error.
//
// Acquiring a new address takes time (duplicate address detection probes
// the front link for up to dad_probes x dad_interval): the applier does
// it without r.mu, so that switches, failovers, renewals, expiries and
// status go on meanwhile. The new addresses are reserved in r.probing
// for that time (a change that needs one of them waits for the probe);
// then, under r.mu again, the change is built anew if the table changed
// meanwhile, and what it no longer needs is released.
func (r *Registry) prepareLocked(fn func(*Table) error) (*Table, []Event, error) {
	for {
		base := r.pending
		next, evs, err := r.buildLocked(fn)
		if err != nil {
			r.mu.Unlock()
			return nil, nil, err
		}
		if r.applier == nil {
			return next, evs, nil
		}
		held := r.heldLocked()
		news := AddrDiff(next, held)
		if len(news) == 0 { // nothing to probe: quick
			if err := r.applier.Prepare(held, next); err != nil {
				r.mu.Unlock()
				return nil, nil, err
			}
			return next, evs, nil
		}
		if wait := r.probingLocked(news); wait != nil {
			r.mu.Unlock()
			<-wait
			r.mu.Lock()
			continue
		}
		done := make(chan struct{})
		if r.probing == nil {
			r.probing = map[netip.Addr]chan struct{}{}
		}
		for _, a := range news {
			r.probing[a] = done
		}
		a := r.applier
		r.mu.Unlock()
		err = a.Prepare(held, next)
		r.mu.Lock()
		for _, ip := range news {
			delete(r.probing, ip)
		}
		close(done)
		if err != nil {
			r.mu.Unlock()
			return nil, nil, err
		}
		if r.pending == base {
			return next, evs, nil
		}
		// Other changes were made meanwhile: build this one again on
		// the newest table. got is what the applier holds now.
		got := Union(r.heldLocked(), next)
		again, evs, err := r.buildLocked(fn)
		if err != nil {
			a.Commit(got, r.heldLocked())
			r.mu.Unlock()
			return nil, nil, err
		}
		if len(AddrDiff(again, got)) > 0 { // needs another address now
			a.Commit(got, r.heldLocked())
			continue
		}
		a.Commit(got, Union(r.heldLocked(), again))
		return again, evs, nil
	}
}

// probingLocked returns the channel that closes when the probe of one of
// addrs that another change runs ends, or nil if none is being probed;
// r.mu is held.
func (r *Registry) probingLocked(addrs []netip.Addr) chan struct{} {
	for _, a := range addrs {
		if ch, ok := r.probing[a]; ok {
			return ch
		}
	}
	return nil
}

// buildLocked applies fn to a copy of the newest table, then repairs the
// bindings it changed (repairLocked). It returns the new table and the
// automatic changes (events) that fn and the repair made; they are
// recorded only if the change is published. fn may run more than once
// for one change (see prepareLocked): it must not have other effects.
func (r *Registry) buildLocked(fn func(*Table) error) (*Table, []Event, error) {
	r.staged = nil
	next := r.pending.clone()
	err := fn(next)
	if err == nil {
		r.repairLocked(r.pending, next, r.now())
	}
	evs := r.staged
	r.staged = nil
	return next, evs, err
}

// routesEarly reports whether next may be routed (Lookup) before it is
// durable: it has the same bindings as cur, with the same members in the
// same order, backends and PROXY settings, and the same drains; only
// members' states, health and leases differ. Such a change adds and
// releases nothing and ends no connection, so undoing it is as safe as
// doing it. The cost follows the size of the change (see diff).
func routesEarly(cur, next *Table) bool {
	if len(cur.parts) > 0 || len(next.parts) > 0 || !slices.Equal(cur.drains, next.drains) {
		return false
	}
	same := true
	diff(cur.bindings, next.bindings, func(_ Key, a *Binding, inCur bool, b *Binding, inNext bool) {
		if !same {
			return
		}
		if !inCur || !inNext || len(a.Members) != len(b.Members) {
			same = false
			return
		}
		for i := range a.Members {
			x, y := &a.Members[i], &b.Members[i]
			if x.Name != y.Name || x.Backend != y.Backend || x.ProxyProtocol != y.ProxyProtocol {
				same = false
				return
			}
		}
	})
	return same
}

// heldLocked returns a table that holds every address the applier holds:
// the published table's and the pending one's; r.mu is held.
func (r *Registry) heldLocked() *Table {
	return Union(r.snap.Load(), r.pending)
}

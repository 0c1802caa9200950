package registry

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Remote is a Store that several gateways share: a transactional store
// (package etcdstore) that other gateways write too. With a Remote store
// the registry commits differently (see updateRemote):
//
//   - a write runs against the published table, which is the store's view
//     at a revision (Rev); its edited bindings go to Commit, which writes
//     them in one compare-and-swap transaction that fails with ErrStale
//     when another writer changed one of them after that revision. The
//     registry then waits for its view to pass the conflicting revision,
//     runs the write again on the newer table, and after RemoteTries
//     tries answers ErrConflict (409);
//   - the write publishes nothing itself: the store watches every
//     committed change, this gateway's own included, and hands it to
//     ApplyRemote, which publishes it (the stack's addresses, the
//     watchers). The write returns once ApplyRemote has applied its
//     revision: read your writes;
//   - drains stay local: a gateway's own proxied connections are its own.
//
// Save is not called.
type Remote interface {
	Store
	// Commit writes edits, computed against the view at revision rev, as
	// one transaction that succeeds only if none of the edited bindings
	// changed after rev. It returns the revision that the change was
	// committed at (rev itself if nothing needed writing), or, wrapping
	// ErrStale, a revision that the view must reach before a retry.
	Commit(rev int64, edits []Edit) (int64, error)
}

// Edit is the change of one binding: Old as the view had it, New as the
// write left it; nil for absent.
type Edit struct {
	Key      Key
	Old, New *Binding
}

// ErrStale reports a Remote commit that lost a race: a binding it edits
// changed after the revision that the edit was computed against.
var ErrStale = errors.New("binding changed by another writer")

// RemoteTries is how many times a write runs against a newer view after
// ErrStale before it answers ErrConflict.
const RemoteTries = 5

// remoteWait bounds how long a write waits for the view to reach a
// revision that the store reported.
const remoteWait = 10 * time.Second

// remoteView is the revision of the published table of a registry on a
// Remote store.
type remoteView struct {
	rev int64
	// advanced is closed, and replaced, whenever rev grows.
	advanced chan struct{}
}

// advancedLocked returns the channel that is closed when rev next grows;
// r.mu is held.
func (r *Registry) advancedLocked() chan struct{} {
	if r.remote.advanced == nil {
		r.remote.advanced = make(chan struct{})
	}
	return r.remote.advanced
}

// Revision returns the store revision of the published table; zero on a
// Store that is not Remote.
func (r *Registry) Revision() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.remote.rev
}

// updateRemote is update on a Remote store; see Remote.
func (r *Registry) updateRemote(rs Remote, fn func(*Table) error) error {
	for range RemoteTries {
		r.mu.Lock()
		base, rev := r.snap.Load(), r.remote.rev
		next := base.clone()
		r.staged = nil
		err := fn(next)
		// fn's events are recorded once the change is committed (below).
		evs := r.staged
		r.staged = nil
		if err != nil {
			r.mu.Unlock()
			if errors.Is(err, errNoChange) {
				return nil
			}
			return err
		}
		var edits []Edit
		diff(base.bindings, next.bindings, func(k Key, a *Binding, inBase bool, b *Binding, inNext bool) {
			e := Edit{Key: k}
			if inBase {
				e.Old = a
			}
			if inNext {
				e.New = b
			}
			edits = append(edits, e)
		})
		added := drainsMissing(next.drains, base.drains)
		removed := drainsMissing(base.drains, next.drains)
		// A drain starts before the member leaves the binding: when the
		// watch removes it, the connections are spared (Prune) and the
		// address is still held.
		r.changeDrainsLocked(added, nil)
		r.mu.Unlock()
		if len(edits) > 0 {
			at, err := rs.Commit(rev, edits)
			if err != nil {
				r.mu.Lock()
				r.changeDrainsLocked(nil, added)
				r.mu.Unlock()
				if !errors.Is(err, ErrStale) {
					return fmt.Errorf("save table: %w", err)
				}
				if err := r.waitRevision(at); err != nil {
					return err
				}
				continue
			}
			if err := r.waitRevision(at); err != nil {
				return err
			}
		}
		r.mu.Lock()
		r.changeDrainsLocked(nil, removed)
		r.recordLocked(evs)
		r.mu.Unlock()
		return nil
	}
	return fmt.Errorf("%w: the bindings kept changing under this change (%d tries against other gateways' writes); try again", ErrConflict, RemoteTries)
}

// drainsMissing returns the drains of a that b lacks.
func drainsMissing(a, b []Drain) []Drain {
	var out []Drain
	for _, d := range a {
		if !slices.Contains(b, d) {
			out = append(out, d)
		}
	}
	return out
}

// changeDrainsLocked publishes the table with add added to its drains and
// del removed from them, if that changes anything; r.mu is held.
func (r *Registry) changeDrainsLocked(add, del []Drain) {
	if len(add) == 0 && len(del) == 0 {
		return
	}
	next := r.snap.Load().clone()
	next.deleteDrains(func(d Drain) bool { return slices.Contains(del, d) })
	for _, d := range add {
		next.addDrain(d)
	}
	r.publishRemoteLocked(next)
}

// waitRevision waits until the published table is at revision rev or
// newer.
func (r *Registry) waitRevision(rev int64) error {
	deadline := time.NewTimer(remoteWait)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		cur := r.remote.rev
		ch := r.advancedLocked()
		r.mu.Unlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("the change is committed at revision %d, but this gateway's view is still at revision %d after %v: is the store's watch running?", rev, cur, remoteWait)
		}
	}
}

// ApplyRemote applies a change that a Remote store watched, at revision
// rev: set puts each binding at its key, del removes the bindings at its
// keys. The change is published like a local one: the applier holds the
// new addresses and releases the old ones, and the watchers run. A binding
// that fails the registry's checks is skipped and logged. A rev that is not
// newer than the published table's only publishes the change.
//
// The store calls it from one goroutine, in revision order.
func (r *Registry) ApplyRemote(rev int64, set []*Binding, del []Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(set) > 0 || len(del) > 0 {
		prev := r.snap.Load()
		next := prev.clone()
		for _, b := range set {
			one := &Table{}
			one.set(b)
			if err := r.checkTable(one); err != nil {
				r.log.Error("skipping a binding from the shared table", "binding", b.Key, "revision", rev, "err", err)
				continue
			}
			old, _ := prev.bindings.get(b.Key)
			next.set(b)
			for _, m := range b.Members {
				if old == nil || !old.Has(m.Name) {
					next.dropDrain(b.Key, m.Name) // registered again
				}
			}
		}
		for _, k := range del {
			next.del(k)
		}
		r.publishRemoteLocked(next)
	}
	if rev > r.remote.rev {
		r.remote.rev = rev
		if r.remote.advanced != nil {
			close(r.remote.advanced)
			r.remote.advanced = nil
		}
	}
}

// publishRemoteLocked publishes next, a table derived from the published
// one; r.mu is held. The applier prepares it first; a failure (an address
// that the stack cannot take) is logged, not refused: the change is
// committed in the shared table already.
func (r *Registry) publishRemoteLocked(next *Table) {
	prev := r.snap.Load()
	if r.applier != nil {
		if err := r.applier.Prepare(prev, next); err != nil {
			r.log.Error("apply a change of the shared table", "err", err)
		}
	}
	r.pending = next
	r.publishLocked(prev, next, nil) // the writer recorded its events (updateRemote)
}

package registry

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Lease bounds.
const (
	// MinTTL is the shortest lease accepted.
	MinTTL = 100 * time.Millisecond
	// MaxTTL is the longest lease accepted.
	MaxTTL = 24 * time.Hour
)

// maxEvents is how many automatic changes Events remembers.
const maxEvents = 128

// Event is one automatic change of the table: a lease that ran out, a
// health check that failed or recovered, a failover.
type Event struct {
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Binding is the binding concerned.
	Binding Key `json:"binding"`
	// Member is the member concerned.
	Member string `json:"member"`
	// What happened: "down", "up", "expired", "removed", "promoted", "demoted".
	What string `json:"what"`
	// Why it happened, for people.
	Why string `json:"why"`
	// Cause is what made it happen, for programs.
	Cause ChangeCause `json:"cause,omitempty"`
}

// Events returns the most recent automatic changes, oldest first.
func (r *Registry) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// eventLocked stages an automatic change of the change being built; it
// is recorded and logged once that change is published (recordLocked),
// never if it fails. r.mu is held.
func (r *Registry) eventLocked(e Event) {
	r.staged = append(r.staged, e)
}

// recordLocked records and logs automatic changes that were published;
// r.mu is held.
func (r *Registry) recordLocked(evs []Event) {
	for _, e := range evs {
		if len(r.events) == maxEvents {
			r.events = slices.Delete(r.events, 0, 1)
		}
		r.events = append(r.events, e)
		if r.opts.OnEvent != nil {
			r.opts.OnEvent(e)
		}
		r.log.Info("automatic change", "binding", e.Binding, "member", e.Member, "what", e.What, "why", e.Why)
	}
}

// Renew extends the lease of member name in binding k by its TTL, from
// the moment the renewal arrived. A member that its lease had marked down
// is up again.
//
// A renewal is judged by when it arrived, not by when it gets the write
// lock: until it is applied, Expire leaves alone a lease that ran out
// after the renewal arrived.
func (r *Registry) Renew(name string, k Key) (Binding, error) {
	if err := ValidateName(name); err != nil {
		return Binding{}, err
	}
	at := r.now()
	r.arrive(k, name, at)
	defer r.leave(k, name)
	var out Binding
	err := r.update(func(t *Table) error {
		old, i, err := t.member(k, name, "name")
		if err != nil {
			return fmt.Errorf("renew %s: %w", name, err)
		}
		if old.Members[i].TTL == 0 {
			return fmt.Errorf("renew %s: %w", name, Invalid("ttl", "%s on %s is registered without a lease; nothing to renew", name, k))
		}
		b := cloneBinding(k, old)
		now := r.now()
		m := &b.Members[i]
		m.Expires = at.Add(m.TTL)
		if m.Down && m.DownCause == DownLease {
			m.Down, m.DownCause, m.Since, m.Cause, m.Reason = false, DownNone, now, CauseRenew, "lease renewed"
			r.eventLocked(Event{Time: now, Binding: k, Member: name, What: "up", Why: "lease renewed", Cause: CauseRenew})
		}
		r.failover(b, now)
		t.set(b)
		out = b.clone()
		return nil
	})
	if err != nil {
		return Binding{}, err
	}
	return out, nil
}

// renewalKey names the member of a renewal in flight.
type renewalKey struct {
	k    Key
	name string
}

// renewal is the renewals in flight of one member: how many, and when the
// first arrived.
type renewal struct {
	at time.Time
	n  int
}

// arrive records a renewal of (k, name) that arrived at at.
func (r *Registry) arrive(k Key, name string, at time.Time) {
	r.arrMu.Lock()
	defer r.arrMu.Unlock()
	if r.arrivals == nil {
		r.arrivals = map[renewalKey]renewal{}
	}
	rk := renewalKey{k, name}
	a, ok := r.arrivals[rk]
	if !ok || at.Before(a.at) {
		a.at = at
	}
	a.n++
	r.arrivals[rk] = a
}

// leave forgets a renewal of (k, name) that arrive recorded.
func (r *Registry) leave(k Key, name string) {
	r.arrMu.Lock()
	defer r.arrMu.Unlock()
	rk := renewalKey{k, name}
	a := r.arrivals[rk]
	if a.n--; a.n <= 0 {
		delete(r.arrivals, rk)
	} else {
		r.arrivals[rk] = a
	}
}

// renewing reports whether a renewal of (k, name) that arrived before
// expires is waiting to be applied.
func (r *Registry) renewing(k Key, name string, expires time.Time) bool {
	r.arrMu.Lock()
	defer r.arrMu.Unlock()
	a, ok := r.arrivals[renewalKey{k, name}]
	return ok && a.at.Before(expires)
}

// reasonLease is the Reason of a member that its lease marked down
// (DownLease).
const reasonLease = "lease expired"

// Expire ends the leases that ran out by now: a mode-1 member is removed
// (its address released), a mode-2 member is marked down (and failed over
// from, if it was active). It returns how many leases ended. The gateway
// calls it periodically.
func (r *Registry) Expire() int {
	n := 0
	err := r.updateAuto(func(t *Table) error {
		n = 0 // fn may run twice (see buildLocked)
		now := r.now()
		// Only bindings with a leased member can expire: the others are
		// not looked at (a table of 10,000 permanent addresses costs
		// nothing here). The list is taken first because the loop changes
		// t.leased.
		// A lease whose renewal arrived in time is left to the renewal.
		isDue := func(k Key, m *Member) bool { return m.leaseDue(now) && !r.renewing(k, m.Name, m.Expires) }
		var due []*Binding
		for _, b := range t.leased.All() {
			if slices.ContainsFunc(b.Members, func(m Member) bool { return isDue(b.Key, &m) }) {
				due = append(due, b)
			}
		}
		for _, old := range due {
			k := old.Key
			b := cloneBinding(k, old)
			b.Members = slices.DeleteFunc(b.Members, func(m Member) bool {
				if !isDue(k, &m) {
					return false
				}
				n++
				if k.Port == 0 {
					r.eventLocked(Event{Time: now, Binding: k, Member: m.Name, What: "removed", Why: reasonLease, Cause: CauseExpiry})
					return true
				}
				return false
			})
			for i := range b.Members {
				m := &b.Members[i]
				if isDue(k, m) {
					m.Down, m.DownCause, m.Since, m.Cause, m.Reason = true, DownLease, now, CauseExpiry, reasonLease
					r.eventLocked(Event{Time: now, Binding: k, Member: m.Name, What: "down", Why: reasonLease, Cause: CauseExpiry})
				}
			}
			r.failover(b, now)
			if len(b.Members) == 0 {
				t.del(k)
			} else {
				t.set(b)
			}
		}
		if n == 0 {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		r.log.Error("expire leases", "err", err)
	}
	return n
}

// leaseDue reports whether m's lease ran out by now and Expire has not yet
// marked it down for that.
func (m *Member) leaseDue(now time.Time) bool {
	return !m.Expires.IsZero() && !now.Before(m.Expires) && m.DownCause != DownLease
}

// SetFailback changes Options.Failback for the health reports that follow.
func (r *Registry) SetFailback(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts.Failback = on
}

// SetHealth records the result of member name's health check in binding
// k: up or down, and why. A change of an active member to down fails over
// to the first healthy standby; a recovered member stays standby unless
// Options.Failback is set and automatic failover had demoted it. Reporting
// an unchanged state is a no-op, and so is reporting up a member that is
// down for another cause than its health (DownLease): the report may have
// been made against a table read before the lease ran out, and only a
// renewal or a registration brings such a member up.
func (r *Registry) SetHealth(k Key, name string, up bool, why string) error {
	return r.updateAuto(func(t *Table) error {
		old, i, err := t.member(k, name, "name")
		if err != nil {
			return fmt.Errorf("set health of %s: %w", name, err)
		}
		if cur := old.Members[i]; cur.Down != up || (up && cur.DownCause != DownHealth) {
			return errNoChange
		}
		b := cloneBinding(k, old)
		now := r.now()
		m := &b.Members[i]
		m.Down, m.Since = !up, now
		m.DownCause, m.Cause, m.Reason = DownHealth, CauseHealth, why
		what := "down"
		if up {
			m.DownCause, what = DownNone, "up"
		}
		r.eventLocked(Event{Time: now, Binding: k, Member: name, What: what, Why: why, Cause: CauseHealth})
		if up && m.FailedOver && r.opts.Failback {
			for j := range b.Members {
				if o := &b.Members[j]; o.State == Active {
					o.State, o.Since, o.Cause, o.Reason = Standby, now, CauseFailback, "failback to "+name
				}
			}
			m.State, m.FailedOver, m.Cause, m.Reason = Active, false, CauseFailback, "failback: "+why
			r.eventLocked(Event{Time: now, Binding: k, Member: name, What: "promoted", Why: "failback", Cause: CauseFailback})
		}
		r.failover(b, now)
		t.set(b)
		return nil
	})
}

// failover promotes the first healthy standby of b when its active member
// is down. Without a healthy standby the down active stays (and the port
// answers RST) until something changes.
func (r *Registry) failover(b *Binding, now time.Time) {
	ai := slices.IndexFunc(b.Members, func(m Member) bool { return m.State == Active })
	if ai < 0 || !b.Members[ai].Down {
		return
	}
	si := slices.IndexFunc(b.Members, func(m Member) bool { return m.State == Standby && !m.Down })
	if si < 0 {
		return
	}
	a, s := &b.Members[ai], &b.Members[si]
	why := "automatic failover: " + a.Name + " " + a.Reason
	// The demoted member keeps its Reason: why it went down.
	a.State, a.Since, a.Cause, a.FailedOver = Standby, now, CauseFailover, true
	s.State, s.Since, s.Cause, s.Reason, s.FailedOver = Active, now, CauseFailover, why, false
	r.eventLocked(Event{Time: now, Binding: b.Key, Member: a.Name, What: "demoted", Why: a.Reason, Cause: CauseFailover})
	r.eventLocked(Event{Time: now, Binding: b.Key, Member: s.Name, What: "promoted", Why: why, Cause: CauseFailover})
}

// repairLocked fails over every port binding that the change from base to
// next touched whose active member is down while a standby is healthy: a
// port is never left without a server while a healthy member exists,
// whatever led there (a restored table, a forced switch undone by a
// health report, ...); next is a table being built.
func (r *Registry) repairLocked(base, next *Table, now time.Time) {
	for _, b := range Changed(base, next) {
		if b.Port == 0 {
			continue
		}
		a, ok := b.Active()
		if !ok || !a.Down || !slices.ContainsFunc(b.Members, func(m Member) bool { return m.State == Standby && !m.Down }) {
			continue
		}
		nb := cloneBinding(b.Key, b)
		r.failover(nb, now)
		next.set(nb)
	}
}

// discardLogger is the registry's logger when Options.Logger is nil.
var discardLogger = slog.New(slog.DiscardHandler)

// RunExpiry calls Expire and EndDrains every interval, and saves the table
// again while a failed save left automatic changes out of the state file,
// until ctx is done; it returns ctx's error. The gateway runs it in a goroutine that it owns and waits
// for:
//
//	wg.Go(func() { reg.RunExpiry(ctx, 100*time.Millisecond) })
//
// A lease or a drain thus ends at most interval after it ran out.
func (r *Registry) RunExpiry(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = MinTTL
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var retried time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			r.Expire()
			r.EndDrains()
			// A failing disk is tried again every second at most: each
			// failure is logged.
			if now := time.Now(); now.Sub(retried) >= time.Second {
				retried = now
				if err := r.retrySave(); err != nil {
					r.log.Error("save table again", "err", err)
				}
			}
		}
	}
}
